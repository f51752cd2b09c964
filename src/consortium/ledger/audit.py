"""A whole-ledger audit in one pass: the chain, every signature, the Merkle root at every checkpoint (pure: no
I/O, no database, no clock).

:func:`audit` streams the entries through :func:`consortium.ledger.chain.verify_chain` (links, hashes, the
hub's head), checks each entry's signatures (:class:`consortium.ledger.signatures.SignatureChecker`), feeds
its hash to a :class:`consortium.ledger.merkle.CompactRange`, and when the tree reaches the size of a
checkpoint it was given (the hub's own, a node's kept ones) checks that checkpoint: the same root, a hub
signature by a key the ledger announces, the hub's id as origin; once all entries are in (an org may cosign a
checkpoint older than its enrolment), every cosignature by the org key the ledger names. It reports the
first problem in ledger order: an entry (``first_bad_seq``) or a checkpoint
(``bad_checkpoint``, its size), with the reason. A checkpoint larger than the ledger means entries were cut.

Memory stays ``O(log n)`` plus the checkpoints, whatever the ledger's length.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from consortium.crypto import verify_signature
from consortium.ledger.chain import GENESIS_HASH, ChainedEntry, ChainHead, verify_chain
from consortium.ledger.checkpoint import Checkpoint
from consortium.ledger.merkle import CompactRange, entry_leaf
from consortium.ledger.signatures import SignatureChecker

HUB_CREATED = "hub.created"


@dataclass(frozen=True)
class Claim:
    """A checkpoint to check the ledger against, where it came from (``source``, for the report), and the
    cosignatures that came with it as ``(org, key_id, signature)``."""

    checkpoint: Checkpoint
    source: str = "hub"
    cosignatures: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class AuditReport:
    """The outcome of :func:`audit`. ``checked``: entries that verified before the first problem;
    ``checkpoints``: checkpoints that matched; ``root``: the Merkle root (hex) of the ``checked`` entries."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    bad_checkpoint: int | None = None
    reason: str | None = None
    head_hash: str = GENESIS_HASH
    checkpoints: int = 0
    root: str = ""


class _Problem(Exception):
    def __init__(self, reason: str, seq: int | None = None, checkpoint: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.seq, self.checkpoint = reason, seq, checkpoint


def _check_claim(claim: Claim, root: bytes, keys: SignatureChecker, hub_id: str | None) -> None:
    cp, where = claim.checkpoint, f"checkpoint {claim.checkpoint.size} ({claim.source})"
    if cp.root_bytes != root:
        raise _Problem(f"{where} has root {cp.root[:16]}… but the ledger's first {cp.size} entries have root "
                       f"{root.hex()[:16]}…: the ledger was rewritten after it was signed",
                       checkpoint=cp.size)
    public_key = keys.hub_keys.get(cp.key_id)
    if public_key is None or not cp.signed_by(public_key):
        raise _Problem(f"{where} is not signed by a hub key the ledger announces", checkpoint=cp.size)
    if hub_id is not None and cp.origin != hub_id:
        raise _Problem(f"{where} names origin {cp.origin}, the ledger's hub is {hub_id}", checkpoint=cp.size)


def _check_cosignatures(claim: Claim, keys: SignatureChecker) -> None:
    """After the whole ledger: an org may cosign a checkpoint made before its key was enrolled."""
    cp, where = claim.checkpoint, f"checkpoint {claim.checkpoint.size} ({claim.source})"
    for org, kid, signature in claim.cosignatures:
        org_key = keys.org_keys.get(kid)
        if org_key is None or not verify_signature(org_key, cp.note, signature):
            raise _Problem(f"{where}: the cosignature of {org} does not verify with the org key the ledger "
                           "names",
                           checkpoint=cp.size)


def audit(
    entries: Iterable[ChainedEntry], head: ChainHead | None = None, claims: Iterable[Claim] = ()
) -> AuditReport:
    """Check chain, signatures and every claimed checkpoint in one pass over ``entries`` (seq order, lazily
    read; ``head`` read before them, as for :func:`verify_chain`). Names the first problem."""
    keys = SignatureChecker()
    tree = CompactRange()
    pending = sorted((c for c in claims if c.checkpoint.size > 0), key=lambda c: -c.checkpoint.size)
    found: list[_Problem] = []
    cosigned: list[Claim] = []
    hub_id: str | None = None

    def checked() -> Iterator[ChainedEntry]:
        nonlocal hub_id
        for entry in entries:
            yield entry  # verify_chain asks for the next one only once this one's link and hash hold
            try:
                reason = keys.check(entry)
                if reason is not None:
                    raise _Problem(reason, seq=entry.seq)
                if entry.event_type == HUB_CREATED and isinstance(entry.payload, dict) and hub_id is None:
                    hub_id = entry.payload.get("hub_id")
                tree.append(entry_leaf(entry.hash))
                while pending and pending[-1].checkpoint.size == tree.size:
                    claim = pending.pop()
                    _check_claim(claim, tree.root(), keys, hub_id)
                    cosigned.append(claim)
            except _Problem as problem:
                found.append(problem)
                return

    chain = verify_chain(checked(), head)
    root = tree.root().hex()
    matched = len(cosigned)
    if not found and chain.ok:
        try:
            for claim in cosigned:
                _check_cosignatures(claim, keys)
        except _Problem as problem:
            found.append(problem)
    if found:
        p = found[0]
        return AuditReport(False, tree.size, p.seq, p.checkpoint, p.reason,
                           chain.head_hash, matched, root)
    if not chain.ok:
        return AuditReport(False, chain.checked, chain.first_bad_seq, None, chain.reason, chain.head_hash,
                           matched, root)
    if pending:
        claim = pending[-1]
        size = claim.checkpoint.size
        return AuditReport(False, chain.checked, tree.size + 1, size,
                           f"checkpoint {size} ({claim.source}) covers {size} entries but the ledger has "
                           f"{tree.size}: entries {tree.size + 1}–{size} were cut", chain.head_hash, matched,
                           root)
    return AuditReport(True, chain.checked, None, None, None, chain.head_hash, matched, root)
