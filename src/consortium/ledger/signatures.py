"""Who vouches for each ledger entry: the hub's signature on every entry, an organisation's on the entries it
makes (pure: no I/O, no database, no clock).

- **Hub signature.** Every entry written since migration 0005 carries ``signature``, the hub's Ed25519
  signature over :func:`entry_message` (a domain tag and the entry's hex hash), and ``signer_key_id``. The
  hash covers the payload's commitment, so the signature holds for a redacted entry too. The hub's public keys
  are in the ledger itself: a ``hub.key`` entry announces one (``{"public_key", "key_id"}``). The first is
  signed by the key it announces (trust on first use: every witness pins it); a later one must be signed by a
  key announced before it, so whoever can write the database but lacks the hub's key cannot slip in a key of
  their own. An entry must be signed by a key announced at or before it.
- **Actor signature.** An entry an organisation vouches for (a vote) names the org key in ``actor_key_id``
  (covered by the entry's hash) and carries ``actor_signature`` over :func:`actor_message`: the event type and
  the very payload the hub records. It is checked whenever the payload is revealed; a redacted entry drops it
  with the payload (a low-entropy payload could otherwise be confirmed by trying guesses against it). Org keys
  are in the ledger too: each ``node.enrolled`` (and ``org.key``) entry names its org's ``public_key`` and
  ``key_id``.
- **Old entries.** Entries from before signatures have none and are checked by the chain alone, but once a
  signed entry has appeared every later entry must be signed.

:class:`SignatureChecker` checks entries one at a time in seq order, learning keys as it goes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from consortium.crypto import canonical_json, key_id, verify_signature
from consortium.ledger.chain import ChainedEntry

ENTRY_TAG = b"consortium-ledger-entry/1\n"
ACTOR_TAG = b"consortium-ledger-actor/1\n"
HUB_KEY = "hub.key"
"""The event that announces a hub key."""
KEY_ROTATED = "org.key_rotated"
"""The event of an org's key rotation: its payload names the new ``public_key`` and ``key_id`` and the
``old_key_id``, and its actor signature is the old key's (keys learned before stay known, so older
signatures still verify)."""
ORG_KEY_EVENTS = frozenset({"node.enrolled", "org.key", KEY_ROTATED})
"""Events whose payload names an org's ``public_key`` and ``key_id`` (``node.enrolled`` entries from before
signatures name no public key; the hub records an ``org.key`` entry for each such org when it first signs)."""


@dataclass(frozen=True)
class ActorSignature:
    """An org's signature (base64) over :func:`actor_message` of the event it asks the hub to record."""

    key_id: str
    signature: str


def entry_message(entry_hash: str) -> bytes:
    """What the hub signs for an entry: the domain tag and the entry's hex hash."""
    return ENTRY_TAG + entry_hash.encode("ascii")


def actor_message(event_type: str, payload: dict[str, Any]) -> bytes:
    """What an org signs for an entry it vouches for: the domain tag and the canonical JSON of
    ``{"event_type", "payload"}``. ``ValueError`` for a payload that is not canonical JSON."""
    try:
        return ACTOR_TAG + canonical_json({"event_type": event_type, "payload": payload})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload of {event_type!r} is not canonical JSON: {exc}") from None


def hub_key_payload(public_key_b64: str) -> dict[str, str]:
    """The payload of a ``hub.key`` entry."""
    return {"public_key": public_key_b64, "key_id": key_id(public_key_b64)}


def sign_entry(entry: ChainedEntry, signer_key_id: str, sign: Callable[[bytes], str]) -> ChainedEntry:
    """``entry`` with the hub's signature (``sign`` returns base64 Ed25519 over the message it is given)."""
    return replace(entry, signature=sign(entry_message(entry.hash)), signer_key_id=signer_key_id)


def _announced_key(entry: ChainedEntry) -> tuple[str, str] | str:
    """``(key_id, public_key)`` a key-announcing entry names, or why it names none."""
    payload = entry.payload
    if not isinstance(payload, dict):
        return f"entry {entry.seq} ({entry.event_type}) announces a key but its payload is redacted"
    public_key, kid = payload.get("public_key"), payload.get("key_id")
    try:
        if not isinstance(public_key, str) or key_id(public_key) != kid:
            raise ValueError("its key_id is not the id of its public_key")
    except ValueError as exc:
        return f"entry {entry.seq} ({entry.event_type}) names a malformed key: {exc}"
    return kid, public_key


class SignatureChecker:
    """Checks the signatures of entries fed in seq order (after their chain links and hashes were checked)."""

    def __init__(self) -> None:
        self.hub_keys: dict[str, str] = {}
        self.org_keys: dict[str, str] = {}
        self.first_signed: int | None = None

    def check(self, entry: ChainedEntry) -> str | None:
        """Why ``entry``'s signatures do not hold, or None when they do; learns the keys it announces."""
        seq = entry.seq
        if entry.signature is None and entry.signer_key_id is None:
            if self.first_signed is not None:
                return f"entry {seq} is not signed, yet entry {self.first_signed} before it was"
            if entry.actor_key_id is not None or entry.actor_signature is not None:
                return f"entry {seq} has an actor signature but no hub signature"
            return None
        if not isinstance(entry.signature, str) or not isinstance(entry.signer_key_id, str):
            return f"entry {seq} has a signature without its key id, or a key id without its signature"
        if entry.event_type == HUB_KEY:
            announced = _announced_key(entry)
            if isinstance(announced, str):
                return announced
            if not self.hub_keys and announced[0] != entry.signer_key_id:
                return f"hub.key entry {seq} is not signed by the key it announces"
            if self.hub_keys and entry.signer_key_id not in self.hub_keys:
                return f"hub.key entry {seq} announces a new hub key but is not signed by an announced one"
            if not self.hub_keys:
                self.hub_keys.setdefault(*announced)
        public_key = self.hub_keys.get(entry.signer_key_id)
        if public_key is None:
            return f"entry {seq} is signed by hub key {entry.signer_key_id[:16]!r}, which no hub.key entry " \
                   "before it announces"
        if not verify_signature(public_key, entry_message(entry.hash), entry.signature):
            return f"the hub signature of entry {seq} does not verify"
        self.first_signed = self.first_signed or seq
        if entry.event_type == HUB_KEY:
            self.hub_keys.setdefault(*announced)
        problem = self._actor(entry) or self._rotation(entry)
        if problem is None and entry.event_type in ORG_KEY_EVENTS and isinstance(entry.payload, dict) \
                and "public_key" in entry.payload:
            announced = _announced_key(entry)
            if isinstance(announced, str):
                return announced
            self.org_keys.setdefault(*announced)
        return problem

    @staticmethod
    def _rotation(entry: ChainedEntry) -> str | None:
        """A revealed key rotation must be vouched for by the key it retires."""
        if entry.event_type != KEY_ROTATED or not isinstance(entry.payload, dict):
            return None
        if entry.actor_key_id is None or entry.actor_key_id != entry.payload.get("old_key_id"):
            return f"key rotation entry {entry.seq} is not signed by the key it retires"
        return None

    def _actor(self, entry: ChainedEntry) -> str | None:
        seq = entry.seq
        if entry.actor_key_id is None:
            if entry.actor_signature is not None:
                return f"entry {seq} has an actor signature but names no actor key"
            return None
        if entry.payload is None:
            return None if entry.actor_signature is None else \
                f"entry {seq} is redacted but keeps its actor signature"
        if entry.actor_signature is None:
            return f"entry {seq} names actor key {entry.actor_key_id[:16]!r} but has no actor signature"
        public_key = self.org_keys.get(entry.actor_key_id)
        if public_key is None:
            return f"entry {seq} is signed by org key {entry.actor_key_id[:16]!r}, which no enrolment " \
                   "before it names"
        try:
            message = actor_message(entry.event_type, entry.payload)
        except ValueError as exc:
            return f"entry {seq}: {exc}"
        if not verify_signature(public_key, message, entry.actor_signature):
            return f"the actor signature of entry {seq} does not verify"
        return None
