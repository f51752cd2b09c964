"""The ledger's hash chain (pure: no I/O, no database, no clock, no randomness).

Each entry's hash covers its own content and the hash of the entry before it, starting from
:data:`GENESIS_HASH`. Changing, removing, inserting or reordering any entry therefore breaks the chain at that
point, and :func:`verify_chain` names the first entry where it stops adding up.

Entries come in two formats, told apart by ``payload_commitment``:

- **sealed** (every entry written since payloads became redactable): ``payload_commitment`` is
  ``sha256(salt || canonical_json(payload))`` with ``salt`` 16 random bytes (32 hex digits) chosen by the
  writer, and the hash covers ``seq``, ``event_type``, ``actor``, ``created_at``, ``prev_hash`` and the
  commitment, not the payload. A reader outside an entry's audience gets it *redacted* (``payload`` and
  ``salt`` None) and still verifies the chain; a reader who gets the payload and salt also checks them
  against the commitment. The salt keeps a low-entropy payload (a dataset's name) from being guessed from its
  commitment.
- **plain** (ledgers written before; ``payload_commitment`` None, and NULL ``salt`` in the database): the hash
  covers the payload itself, so such an entry verifies only with its payload.

Entries written since migration 0005 are also signed (see :mod:`consortium.ledger.signatures`): ``signature``
is the hub's Ed25519 signature over the entry's hash, and an entry an organisation vouches for carries its
``actor_key_id`` (covered by the hash, so it cannot be stripped unnoticed) and ``actor_signature`` over the
event type and payload (redacted with the payload). The signatures are not part of the hash.

What a chain alone cannot show is truncation of its tail: a prefix of a valid chain is a valid chain. The hub
keeps its newest seq and hash (its :class:`ChainHead`); :func:`verify_chain` given that head also finds a cut
tail, and names missing entries as such: a gap followed by an entry that links to a missing predecessor is a
cut (the entries after it may well be honest), not a bad entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from consortium.crypto import canonical_json, sha256_hex

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first entry."""

SALT_BYTES = 16
"""Length of a sealed entry's salt (written as 32 hex digits)."""


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
    """A ledger entry with its link to the previous entry (``prev_hash``) and its own ``hash``.

    A sealed entry carries ``payload_commitment``; redacted, its ``payload``, ``salt`` and ``actor_signature``
    are None. A plain entry has no commitment and always its payload. ``signature`` / ``signer_key_id`` (the
    hub's) and ``actor_key_id`` / ``actor_signature`` (an org's) are None on entries from before signatures.
    """

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

    @property
    def event(self) -> LedgerEvent:
        """The event part of this entry, without the chain links."""
        return LedgerEvent(self.seq, self.event_type, self.actor, self.payload, self.created_at)


@dataclass(frozen=True)
class ChainHead:
    """The newest entry's seq and hash as the hub records them (seq 0 and :data:`GENESIS_HASH` when empty)."""

    seq: int
    hash: str


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


def _digest(seq: Any, event_type: Any, document: dict[str, Any]) -> str:
    try:
        body = canonical_json(document)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ledger entry {seq!r} ({event_type!r}) is not canonical JSON: {exc}") from None
    return sha256_hex(body)


def entry_hash(prev_hash: str, event: LedgerEvent) -> str:
    """Hash of a plain entry: SHA-256 hex of the canonical JSON of the event's fields and ``prev_hash``.

    Raises ``ValueError`` when the event cannot be encoded as canonical JSON (NaN, infinity, non-JSON types).
    """
    return _digest(event.seq, event.event_type, {
        "seq": event.seq,
        "event_type": event.event_type,
        "actor": event.actor,
        "payload": event.payload,
        "created_at": event.created_at,
        "prev_hash": prev_hash,
    })


def payload_commitment(payload: dict[str, Any], salt: str) -> str:
    """``sha256(salt || canonical_json(payload))`` in hex; ``salt`` is :data:`SALT_BYTES` bytes as hex.

    Raises ``ValueError`` for a malformed salt or a payload that is not canonical JSON.
    """
    try:
        raw = bytes.fromhex(salt)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != SALT_BYTES or raw.hex() != salt:
        raise ValueError(f"salt must be {2 * SALT_BYTES} lower-case hex digits")
    try:
        body = canonical_json(payload)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload is not canonical JSON: {exc}") from None
    return sha256_hex(raw + body)


def sealed_hash(
    prev_hash: str, seq: int, event_type: str, actor: str, created_at: str, commitment: str,
    actor_key_id: str | None = None,
) -> str:
    """Hash of a sealed entry: SHA-256 hex of the canonical JSON of its fields, with the payload's commitment
    in place of the payload (and ``actor_key_id`` among them when the actor signed the entry)."""
    document = {
        "seq": seq,
        "event_type": event_type,
        "actor": actor,
        "created_at": created_at,
        "prev_hash": prev_hash,
        "payload_commitment": commitment,
    }
    if actor_key_id is not None:
        document["actor_key_id"] = actor_key_id
    return _digest(seq, event_type, document)


def expected_hash(entry: ChainedEntry) -> str:
    """The hash ``entry`` must carry given its content (plain or sealed, revealed or redacted).

    Raises ``ValueError`` naming what is wrong: a revealed payload or salt that does not match the commitment,
    a plain entry without its payload, content that is not canonical JSON.
    """
    seq = entry.seq
    commitment = entry.payload_commitment
    if commitment is None:
        if entry.payload is None:
            raise ValueError(f"entry {seq} has neither a payload nor a payload commitment")
        if entry.actor_key_id is not None:
            raise ValueError(f"entry {seq} is a plain entry with an actor key: only sealed entries have one")
        return entry_hash(entry.prev_hash, entry.event)
    if entry.payload is not None or entry.salt is not None:
        if entry.payload is None or entry.salt is None:
            raise ValueError(f"entry {seq} reveals its payload or its salt without the other")
        try:
            revealed = payload_commitment(entry.payload, entry.salt)
        except ValueError as exc:
            raise ValueError(f"entry {seq}: {exc}") from None
        if revealed != commitment:
            raise ValueError(f"payload of entry {seq} does not match its commitment")
    return sealed_hash(entry.prev_hash, seq, entry.event_type, entry.actor, entry.created_at, commitment,
                       entry.actor_key_id)


def redact(entry: ChainedEntry) -> ChainedEntry:
    """``entry`` without its payload, salt and actor signature (a guessed payload could be checked against
    it); it still verifies. Only a sealed entry can be redacted."""
    if entry.payload_commitment is None:
        raise ValueError(f"entry {entry.seq} is a plain entry: its hash needs its payload")
    return replace(entry, payload=None, salt=None, actor_signature=None)


def append(
    head: ChainedEntry | None,
    event_type: str,
    actor: str,
    payload: dict[str, Any],
    created_at: str,
    salt: str | None = None,
    actor_key_id: str | None = None,
) -> ChainedEntry:
    """The entry that follows ``head``, or the first entry of a chain when ``head`` is ``None`` (unsigned: see
    :func:`consortium.ledger.signatures.sign_entry`).

    With ``salt`` (:data:`SALT_BYTES` random bytes as hex, chosen by the caller) the entry is sealed, without
    it plain; a sealed entry may name the ``actor_key_id`` that signs it. ``created_at`` is an ISO-8601
    timestamp chosen by the caller. The payload must be a JSON object without NaN or infinity (``ValueError``
    otherwise); the returned entry holds it as JSON would give it back (tuples as lists, keys as strings), so
    what is stored is exactly what was hashed.
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
    if salt is None:
        if actor_key_id is not None:
            raise ValueError("only a sealed entry (with a salt) can name an actor key")
        digest = entry_hash(prev_hash, LedgerEvent(seq, event_type, actor, normalised, created_at))
        return ChainedEntry(seq, event_type, actor, normalised, created_at, prev_hash, digest)
    commitment = payload_commitment(normalised, salt)
    digest = sealed_hash(prev_hash, seq, event_type, actor, created_at, commitment, actor_key_id)
    return ChainedEntry(seq, event_type, actor, normalised, created_at, prev_hash, digest, salt, commitment,
                        actor_key_id=actor_key_id)


def _missing(first: int, last: int, before: int | None) -> str:
    """Why entries ``first``..``last`` count as cut: the chain goes on at entry ``before`` (None: it ends)."""
    what = f"entry {first} is missing" if first == last else f"entries {first}–{last} are missing"
    if first > 1:
        return f"{what}: the chain was cut after entry {first - 1}"
    if before is not None:
        return f"{what}: every entry before entry {before} was cut"
    return f"{what}: every entry was cut"


def verify_chain(entries: Iterable[ChainedEntry], head: ChainHead | None = None) -> VerifyReport:
    """Recompute the chain from genesis and report the first entry that does not add up.

    Streams: ``entries`` may be a lazy iterator (a paged download, a database cursor); only the previous
    entry's seq and hash are kept. Entries must come in seq order starting at 1. For each entry it checks, in
    order, that its seq follows the previous one, that its ``prev_hash`` is the previous entry's hash, and
    that its ``hash`` matches its content (:func:`expected_hash`: a redacted sealed entry is checked through
    its commitment, a revealed one also against it). An empty chain is valid.

    A gap before an entry whose own hash adds up and whose ``prev_hash`` is not the previous entry's hash is a
    cut: ``first_bad_seq`` is the first missing seq, not the entry after the gap. With ``head`` (read before
    the entries, so entries appended meanwhile may follow it) the entry at ``head.seq`` must have
    ``head.hash``, and a chain that ends before it was cut after its last entry.
    """
    prev_seq, prev_hash, checked = 0, GENESIS_HASH, 0
    at_head = head is not None and head.seq == 0 and head.hash == GENESIS_HASH

    def bad(seq: Any, reason: str) -> VerifyReport:
        return VerifyReport(False, checked, seq if type(seq) is int else None, reason, prev_hash)

    for entry in entries:
        seq = entry.seq
        if type(seq) is not int:
            return bad(seq, f"entry after {prev_seq} has a non-integer seq {seq!r}")
        if seq > prev_seq + 1 and entry.prev_hash != prev_hash:
            reason = _missing(prev_seq + 1, seq - 1, seq)
            try:
                intact = isinstance(entry.hash, str) and expected_hash(entry) == entry.hash
            except ValueError:
                intact = False
            if not intact:
                reason += f"; entry {seq} after the gap does not match its content either"
            return bad(prev_seq + 1, reason)
        if seq != prev_seq + 1:
            return bad(seq, f"seq {seq} follows {prev_seq} (gap or reorder)")
        if entry.prev_hash != prev_hash:
            if prev_seq == 0:
                return bad(seq, f"prev_hash of entry {seq} is not the genesis hash")
            return bad(seq, f"prev_hash of entry {seq} does not match the hash of entry {prev_seq}")
        try:
            recomputed = expected_hash(entry)
        except ValueError as exc:
            return bad(seq, str(exc))
        if not isinstance(entry.hash, str) or recomputed != entry.hash:
            return bad(seq, f"hash of entry {seq} does not match its content")
        if head is not None and seq == head.seq:
            if entry.hash != head.hash:
                return bad(seq, f"entry {seq} is not the hub's head: its hash {entry.hash[:16]}… differs "
                                f"from the head's {head.hash[:16]}… (the chain was rewritten up to here)")
            at_head = True
        prev_seq, prev_hash, checked = seq, entry.hash, checked + 1
    if head is not None and not at_head:
        if prev_seq < head.seq:
            return bad(prev_seq + 1, _missing(prev_seq + 1, head.seq, None))
        return bad(None, f"the hub's head (seq {head.seq}, hash {head.hash[:16]}…) is not a chain head")
    return VerifyReport(True, checked, None, None, prev_hash)
