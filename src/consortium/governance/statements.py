"""What members sign in governance, as canonical JSON statements (pure).

A proposal's *content* names the hub, the kind and what it is about (the subject: a project version, an org,
a model release, a new policy). Its SHA-256 is the proposal's content hash: a vote signs that hash, so a vote
cannot be moved to another proposal, another hub or another version of the same project. The hub signs each
decided outcome over the same hash, so a node can check that a proposal passed without trusting the hub's
word alone: it checks the hub's signature with the hub key it pinned, and its own org's vote with its own key.
An org rotates its key by signing, with the old key, a statement naming the new one (the hub, the org, both
key ids and the new public key), so signatures made before stay attributable.

Each statement is a JSON object whose canonical encoding, after a one-line type tag, is the signed message.
The ``*_message`` functions refuse malformed fields (``ValueError``): nothing else may slip into signed text.
"""

from __future__ import annotations

import re
from typing import Any

from consortium.crypto import canonical_json, sha256_hex
from consortium.crypto import key_id as crypto_key_id
from consortium.ledger.signatures import KEY_ROTATED, actor_message

VOTE_TYPE = "consortium-vote/1"
OUTCOME_TYPE = "consortium-outcome/1"
CHOICES = ("yes", "no", "abstain")
MAX_REASON = 2000

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _check_hex(value: Any, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        digits = 64 if pattern is _HEX64 else 32
        raise ValueError(f"{what} must be {digits} lower-case hex digits")
    return value


def proposal_content(hub_id: str, kind: str, subject: dict[str, Any]) -> dict[str, Any]:
    """The content a proposal's hash covers: the hub it is on, its kind and its subject."""
    _check_hex(hub_id, _HEX32, "hub_id")
    if not isinstance(kind, str) or not kind:
        raise ValueError("kind must be a non-empty string")
    if not isinstance(subject, dict):
        raise ValueError("subject must be a JSON object")
    return {"hub_id": hub_id, "kind": kind, "subject": subject}


def content_hash(content: dict[str, Any]) -> str:
    """SHA-256 (hex) of a proposal's canonical content."""
    return sha256_hex(canonical_json(content))


def vote_statement(
    *, hub_id: str, proposal_id: int, content_hash: str, org: str, choice: str, reason: str = ""
) -> dict[str, Any]:
    """One org's vote on one proposal, as it signs it and as the ledger records it."""
    _check_hex(hub_id, _HEX32, "hub_id")
    _check_hex(content_hash, _HEX64, "content_hash")
    if type(proposal_id) is not int or proposal_id < 1:
        raise ValueError("proposal_id must be a positive integer")
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {', '.join(CHOICES)}, not {choice!r}")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise ValueError(f"reason must be a string of at most {MAX_REASON} characters")
    if not isinstance(org, str) or not org:
        raise ValueError("org must be a non-empty string")
    return {"type": VOTE_TYPE, "hub_id": hub_id, "proposal_id": proposal_id, "content_hash": content_hash,
            "org": org, "choice": choice, "reason": reason}


VOTE_EVENT = "proposal.voted"
"""The ledger event a vote is recorded as: the vote's signature is also the entry's actor signature."""


def vote_message(statement: dict[str, Any]) -> bytes:
    """The bytes an org's key signs for a vote (``statement`` from :func:`vote_statement`): the ledger's
    actor message of the ``proposal.voted`` entry whose payload is exactly the statement, so one signature
    both casts the vote and lets any auditor check, from the ledger alone, that the org cast it."""
    checked = vote_statement(**{k: statement[k] for k in statement if k != "type"})
    return actor_message(VOTE_EVENT, checked)


def outcome_statement(
    *, hub_id: str, proposal_id: int, content_hash: str, status: str, decided_at: str,
    votes: dict[str, str],
) -> dict[str, Any]:
    """The hub's account of a decided proposal: its status, when, and each counted org's choice."""
    _check_hex(hub_id, _HEX32, "hub_id")
    _check_hex(content_hash, _HEX64, "content_hash")
    if type(proposal_id) is not int or proposal_id < 1:
        raise ValueError("proposal_id must be a positive integer")
    if not isinstance(status, str) or not status:
        raise ValueError("status must be a non-empty string")
    if not isinstance(votes, dict) or any(choice not in CHOICES for choice in votes.values()):
        raise ValueError("votes must map org names to yes, no or abstain")
    return {"type": OUTCOME_TYPE, "hub_id": hub_id, "proposal_id": proposal_id,
            "content_hash": content_hash, "status": status, "decided_at": decided_at,
            "votes": dict(sorted(votes.items()))}


def outcome_message(statement: dict[str, Any]) -> bytes:
    """The bytes the hub's key signs for a decided outcome."""
    checked = outcome_statement(**{k: statement[k] for k in statement if k != "type"})
    return canonical_json(checked)


KEY_ROTATION_TYPE = "consortium-key-rotation/1"
KEY_ROTATION_EVENT = KEY_ROTATED
"""The ledger event a key rotation is recorded as: the old key's signature is also the entry's actor
signature, so an auditor checks from the ledger alone that the org's old key handed over to the new one."""
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


def key_rotation_statement(
    *, hub_id: str, org: str, old_key_id: str, key_id: str, public_key: str
) -> dict[str, Any]:
    """An org's hand-over from its current key (``old_key_id``) to a new one (``key_id``, ``public_key``) on
    one hub: what the old key signs, and the payload of the ``org.key_rotated`` ledger entry."""
    _check_hex(hub_id, _HEX32, "hub_id")
    if not isinstance(org, str) or not org:
        raise ValueError("org must be a non-empty string")
    for value, what in ((old_key_id, "old_key_id"), (key_id, "key_id")):
        if not isinstance(value, str) or not _KEY_ID.match(value):
            raise ValueError(f"{what} must be 16 lower-case hex digits")
    if not isinstance(public_key, str) or crypto_key_id(public_key) != key_id:
        raise ValueError("public_key: key_id is not the id of this public key")
    if old_key_id == key_id:
        raise ValueError("key_id: the new key must differ from the old one")
    return {"type": KEY_ROTATION_TYPE, "hub_id": hub_id, "org": org, "old_key_id": old_key_id,
            "key_id": key_id, "public_key": public_key}


def key_rotation_message(statement: dict[str, Any]) -> bytes:
    """The bytes the old key signs for a rotation: the ledger's actor message of the ``org.key_rotated``
    entry whose payload is exactly the statement."""
    checked = key_rotation_statement(**{k: statement[k] for k in statement if k != "type"})
    return actor_message(KEY_ROTATION_EVENT, checked)
