"""Wire schemas of the ledger: entries, head, signed checkpoints with their cosignatures, and Merkle proofs
(kept out of :mod:`consortium.protocol`, which is the rest of the API's)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from consortium.protocol import Count, Wire



class LedgerEntryOut(Wire):
    """A ledger entry; ``payload``, ``salt`` and ``actor_signature`` are null when the caller is outside its
    audience (redacted) or ``payload_commitment`` is null (an entry written before payloads became
    redactable). ``signature`` is the hub's over the entry hash (null on entries from before signatures);
    ``actor_key_id``/``actor_signature`` an org's over the event it asked to record."""

    seq: int
    event_type: str
    actor: str
    payload: dict[str, Any] | None
    created_at: str
    prev_hash: str
    hash: str
    salt: str | None = None
    payload_commitment: str | None = None
    signature: str | None = None
    signer_key_id: str | None = None
    actor_key_id: str | None = None
    actor_signature: str | None = None


class LedgerHeadOut(Wire):
    """The newest ledger entry as the hub records it: a verifier's chain must reach it (else it was cut)."""

    seq: int
    hash: str


class CosignatureOut(Wire):
    """An org's signature over a checkpoint's note: it checked the checkpoint consistent with its last one."""

    org: str
    key_id: str
    signature: str
    created_at: datetime


class CheckpointOut(Wire):
    """The hub's signed statement that its ledger's first ``size`` entries have Merkle ``root``
    (see :mod:`consortium.ledger.checkpoint` for the signed note)."""

    origin: str
    size: Count
    root: str
    created_at: str
    key_id: str
    signature: str
    cosignatures: list[CosignatureOut] = []


class InclusionProofOut(Wire):
    """Entry ``seq`` (leaf ``seq - 1``, hash ``entry_hash``) is in the tree of the first ``size`` entries."""

    seq: Count
    size: Count
    entry_hash: str
    proof: list[str] = Field(description="sibling hashes, leaf end first, hex")


class ConsistencyProofOut(Wire):
    """The tree of the first ``first`` entries is a prefix of the tree of the first ``second``."""

    first: Count
    second: Count
    proof: list[str] = Field(description="RFC 6962 consistency proof, hex")


class CosignIn(Wire):
    """An org's base64 Ed25519 signature over the checkpoint's note."""

    signature: str = Field(min_length=1, max_length=100)
