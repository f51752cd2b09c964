"""Appending state changes to the hash-chained ledger, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from consortium.hub.db.models import LedgerEntry, LedgerHead
from consortium.ledger.chain import ChainedEntry, LedgerEvent, entry_hash


def record(session: Session, event_type: str, actor: str, payload: dict[str, Any]) -> LedgerEntry:
    """Append one event. Bumping the head row first takes the write lock, so appends never fork."""
    return record_many(session, [(event_type, actor, payload)])[0]


HEAD = LedgerHead.__table__
ENTRIES = LedgerEntry.__table__


def record_many(session: Session, events: Sequence[tuple[str, str, dict[str, Any]]]) -> list[LedgerEntry]:
    """Append ``(event_type, actor, payload)`` events in order: two statements on the head row and one insert
    (Core statements: appends happen on every round's critical path). Returns the entries, not added to the
    session."""
    if not events:
        return []
    last_seq, prev_hash = session.execute(
        update(HEAD).where(HEAD.c.id == 1).values(seq=HEAD.c.seq + len(events)).returning(HEAD.c.seq, HEAD.c.hash)
    ).one()
    created_at = datetime.now(UTC).isoformat(timespec="microseconds")
    entries = []
    for seq, (event_type, actor, payload) in enumerate(events, start=last_seq - len(events) + 1):
        event = LedgerEvent(seq=seq, event_type=event_type, actor=actor, payload=payload,
                            created_at=created_at)
        digest = entry_hash(prev_hash, event)
        entries.append(LedgerEntry(seq=seq, event_type=event_type, actor=actor, payload=payload,
                                   created_at=created_at, prev_hash=prev_hash, hash=digest))
        prev_hash = digest
    session.execute(update(HEAD).where(HEAD.c.id == 1).values(hash=prev_hash))
    session.execute(insert(ENTRIES), [
        {column: getattr(entry, column) for column in ENTRIES.c.keys()} for entry in entries
    ])
    return entries


def to_chained(entry: LedgerEntry) -> ChainedEntry:
    return ChainedEntry(
        seq=entry.seq,
        event_type=entry.event_type,
        actor=entry.actor,
        payload=entry.payload,
        created_at=entry.created_at,
        prev_hash=entry.prev_hash,
        hash=entry.hash,
    )


def iter_entries(session: Session, after: int = 0, limit: int | None = None) -> Iterator[LedgerEntry]:
    query = select(LedgerEntry).where(LedgerEntry.seq > after).order_by(LedgerEntry.seq)
    if limit is not None:
        query = query.limit(limit)
    yield from session.scalars(query)
