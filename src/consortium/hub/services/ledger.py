"""Appending state changes to the hash-chained ledger, inside the caller's transaction, and reading them back.

Every entry is sealed (see :mod:`consortium.ledger.chain`) with a fresh random salt, and carries a
:class:`Scope`: whose business its payload is. Readers outside the scope get it redacted
(:mod:`consortium.hub.services.access` decides who is in it).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from consortium.hub.db.models import LedgerEntry, LedgerHead
from consortium.ledger.chain import (
    SALT_BYTES,
    ChainedEntry,
    ChainHead,
    payload_commitment,
    redact,
    sealed_hash,
)


@dataclass(frozen=True)
class Scope:
    """Who may read an entry's payload: the participants of ``project_id``, those who may see the data source
    ``dataset_id``, or, with neither, every authenticated member."""

    project_id: int | None = None
    dataset_id: int | None = None


MEMBERS = Scope()
"""The scope of membership events (orgs admitted, nodes enrolled, users created)."""


def project_scope(project_id: int) -> Scope:
    return Scope(project_id=project_id)


def source_scope(dataset_id: int) -> Scope:
    return Scope(dataset_id=dataset_id)


def record(
    session: Session, event_type: str, actor: str, payload: dict[str, Any], *, scope: Scope
) -> LedgerEntry:
    """Append one event. Bumping the head row first takes the write lock, so appends never fork."""
    return record_many(session, [(event_type, actor, payload)], scope=scope)[0]


HEAD = LedgerHead.__table__
ENTRIES = LedgerEntry.__table__


def record_many(
    session: Session, events: Sequence[tuple[str, str, dict[str, Any]]], *, scope: Scope
) -> list[LedgerEntry]:
    """Append ``(event_type, actor, payload)`` events of one ``scope`` in order: two statements on the head
    row and one insert (Core statements: appends happen on every round's critical path). Returns the entries,
    not added to the session."""
    if not isinstance(scope, Scope):
        raise TypeError(f"ledger entries need a Scope, got {scope!r}")
    if not events:
        return []
    last_seq, prev_hash = session.execute(
        update(HEAD).where(HEAD.c.id == 1).values(seq=HEAD.c.seq + len(events)).returning(HEAD.c.seq, HEAD.c.hash)
    ).one()
    created_at = datetime.now(UTC).isoformat(timespec="microseconds")
    entries = []
    for seq, (event_type, actor, payload) in enumerate(events, start=last_seq - len(events) + 1):
        salt = secrets.token_hex(SALT_BYTES)
        commitment = payload_commitment(payload, salt)
        digest = sealed_hash(prev_hash, seq, event_type, actor, created_at, commitment)
        entries.append(LedgerEntry(seq=seq, event_type=event_type, actor=actor, payload=payload,
                                   created_at=created_at, prev_hash=prev_hash, hash=digest, salt=salt,
                                   payload_commitment=commitment, project_id=scope.project_id,
                                   dataset_id=scope.dataset_id))
        prev_hash = digest
    session.execute(update(HEAD).where(HEAD.c.id == 1).values(hash=prev_hash))
    session.execute(insert(ENTRIES), [
        {column: getattr(entry, column) for column in ENTRIES.c.keys()} for entry in entries
    ])
    return entries


def to_chained(entry: LedgerEntry, reveal: bool = True) -> ChainedEntry:
    """The entry as the chain sees it; without ``reveal``, redacted (a plain entry is always revealed: its
    hash covers the payload itself)."""
    chained = ChainedEntry(
        seq=entry.seq,
        event_type=entry.event_type,
        actor=entry.actor,
        payload=entry.payload,
        created_at=entry.created_at,
        prev_hash=entry.prev_hash,
        hash=entry.hash,
        salt=entry.salt,
        payload_commitment=entry.payload_commitment,
    )
    return chained if reveal or entry.payload_commitment is None else redact(chained)


def iter_entries(session: Session, after: int = 0, limit: int | None = None) -> Iterator[LedgerEntry]:
    query = select(LedgerEntry).where(LedgerEntry.seq > after).order_by(LedgerEntry.seq)
    if limit is not None:
        query = query.limit(limit)
    yield from session.scalars(query)


def head(session: Session) -> ChainHead:
    """The newest seq and hash the hub recorded: what a verifier compares the chain's end with (a deleted
    tail leaves the head where it was)."""
    seq, digest = session.execute(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1)).one()
    return ChainHead(seq, digest)


def lock(session: Session) -> None:
    """Take the append lock (the head row) now, before reading what a decision depends on: writers that do so
    see each other's committed state instead of racing (e.g. starting a run while its test set changes)."""
    session.execute(update(HEAD).where(HEAD.c.id == 1).values(seq=HEAD.c.seq))
