"""Signed checkpoints of the ledger's Merkle tree, their cosignatures, and a witness's check of the next one
(pure: no I/O, no database, no clock).

A checkpoint says "the ledger of hub ``origin`` has ``size`` entries and Merkle root ``root``" (see
:mod:`consortium.ledger.merkle`), at ``created_at``, signed by the hub's key over :func:`checkpoint_note`. A
witness (every node) that kept an earlier checkpoint accepts a newer one only with a consistency proof from
the one it kept, and then cosigns the same note with its org key. A hub that rewrote any entry up to the size
a witness kept (even re-hashing and re-signing everything with its own key) cannot give such a proof, and the
witness's kept checkpoint convicts the rewritten ledger at ``verify``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from consortium.crypto import verify_signature
from consortium.ledger.merkle import HASH_BYTES, verify_consistency

NOTE_TAG = "consortium-ledger-checkpoint/1"
_HEX = re.compile(r"[0-9a-f]{64}", re.ASCII)
_ORIGIN = re.compile(r"[0-9a-f]{32}", re.ASCII)
FIELDS = ("origin", "size", "root", "created_at", "key_id", "signature")


def checkpoint_note(origin: str, size: int, root: str, created_at: str) -> bytes:
    """The bytes a checkpoint's signatures cover: one field a line after the tag. ``ValueError`` for a field
    that could smuggle a line break or is malformed."""
    if not isinstance(origin, str) or not _ORIGIN.fullmatch(origin):
        raise ValueError(f"origin {origin!r:.40} is not a hub id (32 lower-case hex digits)")
    if type(size) is not int or size < 0:
        raise ValueError(f"size {size!r:.40} is not a non-negative integer")
    if not isinstance(root, str) or not _HEX.fullmatch(root):
        raise ValueError(f"root {root!r:.80} is not 64 lower-case hex digits")
    if not isinstance(created_at, str) or not created_at or any(c in created_at for c in "\r\n") \
            or len(created_at) > 40:
        raise ValueError(f"created_at {created_at!r:.60} is not a one-line timestamp")
    return f"{NOTE_TAG}\norigin {origin}\nsize {size}\nroot {root}\ntime {created_at}\n".encode()


@dataclass(frozen=True)
class Checkpoint:
    """A hub-signed checkpoint (``signature`` base64 Ed25519 by the hub key ``key_id``)."""

    origin: str
    size: int
    root: str
    created_at: str
    key_id: str
    signature: str

    @property
    def note(self) -> bytes:
        return checkpoint_note(self.origin, self.size, self.root, self.created_at)

    @property
    def root_bytes(self) -> bytes:
        return bytes.fromhex(self.root)

    def signed_by(self, public_key_b64: str) -> bool:
        """True when the hub signature verifies with ``public_key_b64``."""
        try:
            return verify_signature(public_key_b64, self.note, self.signature)
        except ValueError:
            return False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Checkpoint:
        """A checkpoint from its JSON object (extra members, e.g. cosignatures, ignored); ``ValueError`` when
        malformed."""
        if not isinstance(data, dict):
            raise ValueError("a checkpoint is a JSON object")
        try:
            fields = {name: data[name] for name in FIELDS}
        except KeyError as exc:
            raise ValueError(f"checkpoint without {exc.args[0]!r}") from None
        checkpoint = cls(**fields)
        checkpoint.note  # noqa: B018 - validates the fields
        if not isinstance(checkpoint.key_id, str) or not isinstance(checkpoint.signature, str):
            raise ValueError("checkpoint key_id and signature must be strings")
        return checkpoint


def sign_checkpoint(origin: str, size: int, root: bytes, created_at: str, key_id: str, sign) -> Checkpoint:
    """A checkpoint signed by ``sign`` (base64 Ed25519 over the message it is given) as key ``key_id``."""
    if len(root) != HASH_BYTES:
        raise ValueError("a root is 32 bytes")
    note = checkpoint_note(origin, size, root.hex(), created_at)
    return Checkpoint(origin, size, root.hex(), created_at, key_id, sign(note))


def next_problem(
    kept: Checkpoint | None, new: Checkpoint, proof: list[bytes], hub_public_key: str
) -> str | None:
    """Why a witness that kept ``kept`` must not accept (or cosign) ``new`` given the consistency ``proof``
    from ``kept.size`` to ``new.size``; None when it may. Checks the hub signature, the origin, that the
    ledger did not shrink, and the proof (none is needed from an empty ledger, or for the same size and
    root)."""
    if not new.signed_by(hub_public_key):
        return f"checkpoint {new.size}: the hub signature does not verify with the pinned hub key"
    if kept is None or kept.size == 0:
        return None
    if new.origin != kept.origin:
        return f"checkpoint {new.size} names origin {new.origin}, the kept one {kept.origin}"
    if new.size < kept.size:
        return f"checkpoint {new.size} is smaller than the kept checkpoint {kept.size}: the ledger shrank"
    if not verify_consistency(kept.size, new.size, kept.root_bytes, new.root_bytes, proof):
        return (f"checkpoint {new.size} is not consistent with the kept checkpoint {kept.size}: the ledger's "
                f"first {kept.size} entries were rewritten")
    return None
