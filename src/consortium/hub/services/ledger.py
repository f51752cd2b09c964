"""Appending state changes to the hash-chained ledger, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from consortium.hub.db.models import LedgerEntry, LedgerHead
from consortium.ledger.chain import ChainedEntry, LedgerEvent, entry_hash


def record(session: Session, event_type: str, actor: str, payload: dict[str, Any]) -> LedgerEntry:
    """Append one event. Bumping the head row first takes the write lock, so appends never fork."""
    seq, prev_hash = session.execute(
        update(LedgerHead)
        .where(LedgerHead.id == 1)
        .values(seq=LedgerHead.seq + 1)
        .returning(LedgerHead.seq, LedgerHead.hash)
    ).one()
    event = LedgerEvent(
        seq=seq,
        event_type=event_type,
        actor=actor,
        payload=payload,
        created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
    )
    digest = entry_hash(prev_hash, event)
    session.execute(update(LedgerHead).where(LedgerHead.id == 1).values(hash=digest))
    entry = LedgerEntry(
        seq=seq,
        event_type=event_type,
        actor=actor,
        payload=payload,
        created_at=event.created_at,
        prev_hash=prev_hash,
        hash=digest,
    )
    session.add(entry)
    return entry


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
