"""The ledger's Merkle tree in the database, the hub's signed checkpoints, the orgs' cosignatures, and proofs.

All of it is built off the append path: appends stay as they were (two statements on the head row, one
insert), and the hub's checkpointer (:func:`maybe_checkpoint`, every second from the app) extends the stored
tree from the entries committed since, then signs a checkpoint when ``every`` entries have arrived or
``interval_s`` passed since the last one. The ``ledger_tree`` table keeps the hash of every perfect subtree
above the leaves (a leaf is its entry's hash), so a root or proof at any size the tree covers costs two
queries of ``O(log n)`` rows, whatever the ledger's length. ``ledger_tree_head`` (one row, updated first)
serialises tree builders and checkpoint makers across hub replicas.

Cosignatures are stored but make no ledger entry: an entry per cosignature would grow the ledger after every
checkpoint and so call for the next one, forever. They need none: each is an org's signature that anyone
can check against the org key the ledger names.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from sqlalchemy import insert, select, tuple_, update
from sqlalchemy.orm import Session

from consortium import crypto
from consortium.hub.db.models import (
    LedgerCheckpoint,
    LedgerCosignature,
    LedgerEntry,
    LedgerHead,
    LedgerTree,
    LedgerTreeHead,
    Org,
)
from consortium.hub.services import hub_identity, hub_key
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden, NotFound
from consortium.hub.services.identity import Principal
from consortium.ledger.checkpoint import checkpoint_note, sign_checkpoint
from consortium.ledger.merkle import (
    CompactRange,
    Node,
    consistency_ranges,
    entry_leaf,
    inclusion_ranges,
    perfect_nodes,
    range_hashes,
    root_of,
)

BATCH = 4096
"""Entries added to the stored tree per transaction (a long ledger met the first time is built in steps)."""
ENTRIES = LedgerEntry.__table__
HEAD = LedgerHead.__table__
TREE = LedgerTree.__table__
TREE_HEAD = LedgerTreeHead.__table__


def _lock_tree(session: Session) -> int:
    """Take the tree builders' lock (the tree head row); the size the stored tree covers."""
    return session.execute(
        update(TREE_HEAD).where(TREE_HEAD.c.id == 1).values(size=TREE_HEAD.c.size).returning(TREE_HEAD.c.size)
    ).scalar_one()


def tree_size(session: Session) -> int:
    """How many entries the stored tree covers."""
    return session.execute(select(TREE_HEAD.c.size).where(TREE_HEAD.c.id == 1)).scalar_one()


def lookup(session: Session):
    """A :data:`consortium.ledger.merkle.NodeLookup` over the stored tree (leaves from the entries' hashes);
    409 when an entry or subtree it needs is missing (a ledger cut in the database)."""

    def fetch(nodes: list[Node]) -> dict[Node, bytes]:
        found: dict[Node, bytes] = {}
        leaves = [index + 1 for level, index in nodes if level == 0]
        inner = [node for node in nodes if node[0] > 0]
        if leaves:
            rows = session.execute(select(ENTRIES.c.seq, ENTRIES.c.hash).where(ENTRIES.c.seq.in_(leaves)))
            found.update({(0, seq - 1): entry_leaf(digest) for seq, digest in rows})
        if inner:
            rows = session.execute(select(TREE.c.level, TREE.c.idx, TREE.c.hash)
                                   .where(tuple_(TREE.c.level, TREE.c.idx).in_(inner)))
            found.update({(level, idx): bytes(digest) for level, idx, digest in rows})
        missing = [node for node in nodes if node not in found]
        if missing:
            raise Conflict(f"the ledger lacks what its Merkle tree needs (subtree {missing[0]}): entries "
                           "were removed from the database")
        return found

    return fetch


def extend_tree(session: Session, batch: int = BATCH) -> int:
    """Add the entries committed since to the stored tree, ``batch`` at a time (each step committed); the
    size it covers now."""
    while True:
        size = _lock_tree(session)
        head = session.execute(select(HEAD.c.seq).where(HEAD.c.id == 1)).scalar_one()
        target = min(head, size + batch)
        if target <= size:
            session.commit()
            return size
        edge = perfect_nodes(0, size) if size else []
        known = lookup(session)(edge) if edge else {}
        compact = CompactRange(size, [known[node] for node in edge])
        rows = session.execute(select(ENTRIES.c.seq, ENTRIES.c.hash)
                               .where(ENTRIES.c.seq > size, ENTRIES.c.seq <= target)
                               .order_by(ENTRIES.c.seq)).all()
        if [seq for seq, _ in rows] != list(range(size + 1, target + 1)):
            session.rollback()
            raise Conflict(f"ledger entries between {size + 1} and {target} are missing from the database")
        made = compact.extend(entry_leaf(digest) for _, digest in rows)
        nodes = [{"level": level, "idx": idx, "hash": h} for level, idx, h in made if level > 0]
        if nodes:
            session.execute(insert(TREE), nodes)
        session.execute(update(TREE_HEAD).where(TREE_HEAD.c.id == 1).values(size=target))
        session.commit()


def latest(session: Session) -> LedgerCheckpoint | None:
    return session.scalar(select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()).limit(1))


def maybe_checkpoint(
    session: Session, now: datetime, every: int, interval_s: float, force: bool = False
) -> LedgerCheckpoint | None:
    """Extend the tree and sign a checkpoint of it when the ledger grew by ``every`` entries since the last
    one, or ``interval_s`` seconds passed since it (or ``force``); the new checkpoint, or None."""
    extend_tree(session)
    size = _lock_tree(session)
    last = latest(session)
    last_size = last.size if last is not None else 0
    due = force or last is None or size - last_size >= every or (
        (now - datetime.fromisoformat(last.created_at)).total_seconds() >= interval_s)
    if size <= last_size or not due:
        session.commit()
        return None
    key = hub_key.of(session)
    root = root_of(size, lookup(session))
    made = sign_checkpoint(hub_identity.hub_id(session), size, root, now.isoformat(timespec="microseconds"),
                           key.key_id, key.sign)
    row = LedgerCheckpoint(**asdict(made))
    session.add(row)
    session.commit()
    return row


def _covered(session: Session, size: int) -> None:
    covered = tree_size(session)
    if size > covered:
        raise NotFound(f"the Merkle tree covers the first {covered} entries, not {size}: ask for a size up "
                       "to the latest checkpoint's")


def _default_size(session: Session, size: int | None) -> int:
    if size is not None:
        return size
    last = latest(session)
    if last is None:
        raise NotFound("the hub has signed no checkpoint yet")
    return last.size


def inclusion_proof(session: Session, seq: int, size: int | None) -> tuple[int, str, list[str]]:
    """``(size, entry hash, proof)``: entry ``seq`` in the tree of the first ``size`` entries (default: the
    latest checkpoint's)."""
    size = _default_size(session, size)
    if not 1 <= seq <= size:
        raise BadRequest(f"seq {seq} is not among the first {size} entries")
    _covered(session, size)
    digest = session.scalar(select(ENTRIES.c.hash).where(ENTRIES.c.seq == seq))
    if digest is None:
        raise Conflict(f"entry {seq} is missing from the database")
    proof = range_hashes(inclusion_ranges(seq - 1, size), lookup(session))
    return size, digest, [h.hex() for h in proof]


def consistency_proof(session: Session, first: int, second: int | None) -> tuple[int, list[str]]:
    """``(second, proof)``: the tree of ``first`` entries is a prefix of the tree of ``second`` (default: the
    latest checkpoint's size)."""
    second = _default_size(session, second)
    if not 1 <= first <= second:
        raise BadRequest(f"no consistency proof from size {first} to size {second}: need 1 <= first <= "
                         "second")
    _covered(session, second)
    return second, [h.hex() for h in range_hashes(consistency_ranges(first, second), lookup(session))]


def cosign(session: Session, actor: Principal, size: int, signature: str, now: datetime) -> LedgerCosignature:
    """Store an org's cosignature of checkpoint ``size`` (idempotent); 422 when it does not verify with the
    org's key over the checkpoint's note."""
    if actor.kind != "org" or actor.org_id is None:
        raise Forbidden("a cosignature is an organisation's: sign the request with the org key")
    checkpoint = session.get(LedgerCheckpoint, size)
    if checkpoint is None:
        raise NotFound(f"no checkpoint of size {size}")
    org = session.get(Org, actor.org_id)
    note = checkpoint_note(checkpoint.origin, checkpoint.size, checkpoint.root, checkpoint.created_at)
    if org is None or org.public_key is None or not crypto.verify_signature(org.public_key, note, signature):
        raise BadRequest(f"signature: not {actor.name}'s signature over checkpoint {size}'s note")
    existing = session.scalar(select(LedgerCosignature).where(
        LedgerCosignature.checkpoint_size == size, LedgerCosignature.org_id == org.id))
    if existing is not None:
        return existing
    row = LedgerCosignature(checkpoint_size=size, org_id=org.id, key_id=org.key_id, signature=signature,
                            created_at=now)
    session.add(row)
    session.commit()
    return row


def with_cosignatures(session: Session, checkpoints: list[LedgerCheckpoint]) -> list[tuple[LedgerCheckpoint,
                                                                                         list[tuple]]]:
    """Each checkpoint with its cosignatures as ``(org name, key id, signature, created_at)``."""
    if not checkpoints:
        return []
    rows = session.execute(
        select(LedgerCosignature.checkpoint_size, Org.name, LedgerCosignature.key_id,
               LedgerCosignature.signature, LedgerCosignature.created_at)
        .join(Org, Org.id == LedgerCosignature.org_id)
        .where(LedgerCosignature.checkpoint_size.in_([c.size for c in checkpoints]))
        .order_by(LedgerCosignature.checkpoint_size, Org.name)
    ).all()
    by_size: dict[int, list[tuple]] = {}
    for size, *rest in rows:
        by_size.setdefault(size, []).append(tuple(rest))
    return [(c, by_size.get(c.size, [])) for c in checkpoints]


def after(session: Session, size: int, limit: int) -> list[LedgerCheckpoint]:
    """Checkpoints larger than ``size``, smallest first."""
    return list(session.scalars(select(LedgerCheckpoint).where(LedgerCheckpoint.size > size)
                                .order_by(LedgerCheckpoint.size).limit(limit)))
