"""The ledger's hash chain (pure: no I/O, no database, no clock).

Each entry's hash covers its own content and the hash of the entry before it, starting from
:data:`GENESIS_HASH`. Changing, removing, inserting or reordering any entry therefore breaks the chain at that
point, and :func:`verify_chain` names the first entry where it stops adding up.

What a chain alone cannot show is truncation of its tail: a prefix of a valid chain is a valid chain. Signed
checkpoints of the head (``ledger/checkpoints.py``) cover that.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consortium.crypto import canonical_json, sha256_hex

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first entry."""


@dataclass(frozen=True)
class LedgerEvent:
    """What happened, who did it, and when: the content one ledger entry commits to."""

    seq: int
    event_type: str
    actor: str
    payload: dict[str, Any]
    created_at: str


@dataclass(frozen=True)
class ChainedEntry:
    """A ledger event with its link to the previous entry (``prev_hash``) and its own ``hash``."""

    seq: int
    event_type: str
    actor: str
    payload: dict[str, Any]
    created_at: str
    prev_hash: str
    hash: str

    @property
    def event(self) -> LedgerEvent:
        """The event part of this entry, without the chain links."""
        return LedgerEvent(self.seq, self.event_type, self.actor, self.payload, self.created_at)


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of :func:`verify_chain`.

    ``checked`` counts the entries that verified before the first bad one (all of them when ``ok``);
    ``head_hash`` is the hash of the last verified entry (:data:`GENESIS_HASH` when none did), to compare
    with a published checkpoint.
    """

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None
    head_hash: str = GENESIS_HASH


def entry_hash(prev_hash: str, event: LedgerEvent) -> str:
    """SHA-256 hex of the canonical JSON of the event's fields together with ``prev_hash``.

    Raises ``ValueError`` when the event cannot be encoded as canonical JSON (NaN, infinity, non-JSON types).
    """
    document = {
        "seq": event.seq,
        "event_type": event.event_type,
        "actor": event.actor,
        "payload": event.payload,
        "created_at": event.created_at,
        "prev_hash": prev_hash,
    }
    try:
        body = canonical_json(document)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"ledger entry {event.seq!r} ({event.event_type!r}) is not canonical JSON: {exc}"
        ) from None
    return sha256_hex(body)


def append(
    head: ChainedEntry | None, event_type: str, actor: str, payload: dict[str, Any], created_at: str
) -> ChainedEntry:
    """The entry that follows ``head``, or the first entry of a chain when ``head`` is ``None``.

    ``created_at`` is an ISO-8601 timestamp chosen by the caller. The payload must be a JSON object without
    NaN or infinity (``ValueError`` otherwise); the returned entry holds it as JSON would give it back
    (tuples as lists, keys as strings), so what is stored is exactly what was hashed.
    """
    if not isinstance(event_type, str) or not event_type:
        raise ValueError("event_type must be a non-empty string")
    if not isinstance(actor, str) or not actor:
        raise ValueError("actor must be a non-empty string")
    if not isinstance(payload, dict):
        raise ValueError(f"ledger payload must be a JSON object (dict), not {type(payload).__name__}")
    if not isinstance(created_at, str):
        raise ValueError("created_at must be an ISO-8601 string")
    try:
        datetime.fromisoformat(created_at)
    except ValueError:
        raise ValueError(f"created_at {created_at!r} is not an ISO-8601 timestamp") from None
    try:
        normalised = json.loads(canonical_json(payload))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ledger payload of {event_type!r} is not JSON-serialisable: {exc}") from None
    seq = 1 if head is None else head.seq + 1
    prev_hash = GENESIS_HASH if head is None else head.hash
    event = LedgerEvent(seq, event_type, actor, normalised, created_at)
    digest = entry_hash(prev_hash, event)
    return ChainedEntry(seq, event_type, actor, normalised, created_at, prev_hash, digest)


def verify_chain(entries: Iterable[ChainedEntry]) -> VerifyReport:
    """Recompute the chain from genesis and report the first entry that does not add up.

    Streams: ``entries`` may be a lazy iterator (a paged download, a database cursor); only the previous
    entry's seq and hash are kept. Entries must come in seq order starting at 1. For each entry it checks, in
    order, that its seq follows the previous one, that its ``prev_hash`` is the previous entry's hash, and
    that its ``hash`` matches its content. An empty chain is valid.
    """
    prev_seq, prev_hash, checked = 0, GENESIS_HASH, 0

    def bad(seq: Any, reason: str) -> VerifyReport:
        return VerifyReport(False, checked, seq if type(seq) is int else None, reason, prev_hash)

    for entry in entries:
        seq = entry.seq
        if type(seq) is not int:
            return bad(seq, f"entry after {prev_seq} has a non-integer seq {seq!r}")
        if seq != prev_seq + 1:
            return bad(seq, f"seq {seq} follows {prev_seq} (gap or reorder)")
        if entry.prev_hash != prev_hash:
            if prev_seq == 0:
                return bad(seq, f"prev_hash of entry {seq} is not the genesis hash")
            return bad(seq, f"prev_hash of entry {seq} does not match the hash of entry {prev_seq}")
        try:
            recomputed = entry_hash(entry.prev_hash, entry.event)
        except ValueError as exc:
            return bad(seq, str(exc))
        if not isinstance(entry.hash, str) or recomputed != entry.hash:
            return bad(seq, f"hash of entry {seq} does not match its content")
        prev_seq, prev_hash, checked = seq, entry.hash, checked + 1
    return VerifyReport(True, checked, None, None, prev_hash)
