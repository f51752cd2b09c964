"""The ledger's hash chain (pure): each entry commits to its content and to the entry before it.

Changing, removing, inserting or reordering any entry breaks every hash after it, and :func:`verify_chain`
names the first entry where the chain stops adding up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from consortium.crypto import canonical_json, sha256_hex

GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class LedgerEvent:
    seq: int
    event_type: str
    actor: str
    payload: dict[str, Any]
    created_at: str


@dataclass(frozen=True)
class ChainedEntry:
    seq: int
    event_type: str
    actor: str
    payload: dict[str, Any]
    created_at: str
    prev_hash: str
    hash: str

    @property
    def event(self) -> LedgerEvent:
        return LedgerEvent(self.seq, self.event_type, self.actor, self.payload, self.created_at)


def entry_hash(prev_hash: str, event: LedgerEvent) -> str:
    """SHA-256 of the canonical JSON of the event together with the previous entry's hash."""
    try:
        body = canonical_json(
            {
                "seq": event.seq,
                "event_type": event.event_type,
                "actor": event.actor,
                "payload": event.payload,
                "created_at": event.created_at,
                "prev_hash": prev_hash,
            }
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ledger payload of {event.event_type!r} is not canonical JSON: {exc}") from exc
    return sha256_hex(body)


def append(
    head: ChainedEntry | None, event_type: str, actor: str, payload: dict[str, Any], created_at: str
) -> ChainedEntry:
    """The entry that follows ``head`` (or starts the chain)."""
    seq = 1 if head is None else head.seq + 1
    prev = GENESIS_HASH if head is None else head.hash
    event = LedgerEvent(seq, event_type, actor, payload, created_at)
    return ChainedEntry(seq, event_type, actor, payload, created_at, prev, entry_hash(prev, event))


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None


def verify_chain(entries: Iterable[ChainedEntry]) -> VerifyReport:
    """Recompute the chain from genesis, streaming; report the first entry that does not add up."""
    prev_seq, prev_hash, checked = 0, GENESIS_HASH, 0
    for entry in entries:
        if entry.seq != prev_seq + 1:
            return VerifyReport(False, checked, entry.seq,
                                f"seq {entry.seq} follows {prev_seq} (gap or reorder)")
        if entry.prev_hash != prev_hash:
            return VerifyReport(False, checked, entry.seq,
                                f"prev_hash of entry {entry.seq} does not match the hash of entry {prev_seq}")
        try:
            recomputed = entry_hash(entry.prev_hash, entry.event)
        except ValueError as exc:
            return VerifyReport(False, checked, entry.seq, str(exc))
        if recomputed != entry.hash:
            return VerifyReport(False, checked, entry.seq,
                                f"hash of entry {entry.seq} does not match its content")
        prev_seq, prev_hash, checked = entry.seq, entry.hash, checked + 1
    return VerifyReport(True, checked)
