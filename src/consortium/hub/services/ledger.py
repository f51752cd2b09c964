"""Appending state changes to the hash-chained ledger, inside the caller's transaction, and reading them back.

Every entry is sealed (see :mod:`consortium.ledger.chain`) with a fresh random salt, signed with the hub's key
(:mod:`consortium.hub.services.hub_key`; see :mod:`consortium.ledger.signatures`), optionally vouched for by
an org's signature, and carries a :class:`Scope`: whose business its payload is. Readers outside the scope get
it redacted (:mod:`consortium.hub.services.access` decides who is in it). The Merkle tree and checkpoints over
the entries are built off the append path (:mod:`consortium.hub.services.checkpoints`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from consortium import crypto, faults
from consortium.hub.db.models import LedgerEntry, LedgerHead, Org
from consortium.hub.services import hub_key
from consortium.ledger.chain import (
    SALT_BYTES,
    ChainedEntry,
    ChainHead,
    payload_commitment,
    redact,
    sealed_hash,
)
from consortium.ledger.signatures import ActorSignature, actor_message, entry_message


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
    session: Session, event_type: str, actor: str, payload: dict[str, Any], *, scope: Scope,
    actor_signature: ActorSignature | None = None,
) -> LedgerEntry:
    """Append one event. Bumping the head row first takes the write lock, so appends never fork.

    With ``actor_signature`` the entry is the org's own statement: the signature must verify over
    ``actor_message(event_type, payload)`` with the current key of an admitted org (``ValueError`` otherwise,
    before anything is written).
    """
    if actor_signature is not None:
        check_actor_signature(session, event_type, payload, actor_signature)
    return record_many(session, [(event_type, actor, payload)], scope=scope,
                       actor_signatures=[actor_signature])[0]


def check_actor_signature(
    session: Session, event_type: str, payload: dict[str, Any], signature: ActorSignature
) -> None:
    """``ValueError`` unless ``signature`` is an admitted org's current key's over the event."""
    if not isinstance(signature, ActorSignature):
        raise TypeError(f"actor_signature must be an ActorSignature, got {signature!r}")
    public_key = session.scalar(
        select(Org.public_key).where(Org.key_id == signature.key_id, Org.status == "admitted")
    )
    if public_key is None:
        raise ValueError(f"actor key {signature.key_id[:32]!r} is not the current key of an admitted "
                         "organisation")
    if not crypto.verify_signature(public_key, actor_message(event_type, payload), signature.signature):
        raise ValueError(f"the actor signature does not verify over the {event_type!r} event")


HEAD = LedgerHead.__table__
ENTRIES = LedgerEntry.__table__


def record_many(
    session: Session, events: Sequence[tuple[str, str, dict[str, Any]]], *, scope: Scope,
    actor_signatures: Sequence[ActorSignature | None] | None = None,
) -> list[LedgerEntry]:
    """Append ``(event_type, actor, payload)`` events of one ``scope`` in order, each signed with the hub key:
    two statements on the head row and one insert (Core statements: appends happen on every round's critical
    path). ``actor_signatures`` (one per event, or None) must already be checked
    (:func:`check_actor_signature`). Returns the entries, not added to the session."""
    if not isinstance(scope, Scope):
        raise TypeError(f"ledger entries need a Scope, got {scope!r}")
    if not events:
        return []
    signer = hub_key.of(session)
    actors = list(actor_signatures) if actor_signatures is not None else [None] * len(events)
    if len(actors) != len(events):
        raise ValueError("one actor signature (or None) per event")
    last_seq, prev_hash = session.execute(
        update(HEAD).where(HEAD.c.id == 1).values(seq=HEAD.c.seq + len(events)).returning(HEAD.c.seq, HEAD.c.hash)
    ).one()
    created_at = datetime.now(UTC).isoformat(timespec="microseconds")
    entries = []
    first = last_seq - len(events) + 1
    for seq, (event_type, actor, payload), vouched in zip(range(first, last_seq + 1), events, actors,
                                                         strict=True):
        salt = secrets.token_hex(SALT_BYTES)
        commitment = payload_commitment(payload, salt)
        actor_key_id = vouched.key_id if vouched is not None else None
        digest = sealed_hash(prev_hash, seq, event_type, actor, created_at, commitment, actor_key_id)
        entries.append(LedgerEntry(seq=seq, event_type=event_type, actor=actor, payload=payload,
                                   created_at=created_at, prev_hash=prev_hash, hash=digest, salt=salt,
                                   payload_commitment=commitment, project_id=scope.project_id,
                                   dataset_id=scope.dataset_id, signature=signer.sign(entry_message(digest)),
                                   signer_key_id=signer.key_id, actor_key_id=actor_key_id,
                                   actor_signature=vouched.signature if vouched is not None else None))
        prev_hash = digest
    session.execute(update(HEAD).where(HEAD.c.id == 1).values(hash=prev_hash))
    session.execute(insert(ENTRIES), [
        {column: getattr(entry, column) for column in ENTRIES.c.keys()} for entry in entries
    ])
    faults.point("ledger.record")
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
        signature=entry.signature,
        signer_key_id=entry.signer_key_id,
        actor_key_id=entry.actor_key_id,
        actor_signature=entry.actor_signature,
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
