"""Entry signatures: the hub's over the hash (so redacted entries keep it), an org's over the event, keys
learnt from the ledger, and the rules for unsigned entries and new hub keys."""

from __future__ import annotations

import random
from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consortium.bench.ledger_build import VOTE, build_ledger
from consortium.crypto import OrgIdentity, canonical_json
from consortium.ledger.chain import append, redact
from consortium.ledger.signatures import (
    ACTOR_TAG,
    SignatureChecker,
    actor_message,
    entry_message,
    hub_key_payload,
    sign_entry,
)


def key(seed: int) -> OrgIdentity:
    return OrgIdentity.from_private_key(f"k{seed}", Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


HUB, NEW, NORTH = key(1), key(5), key(2)
T = "2026-01-01T00:00:00+00:00"


def problems(entries) -> list[str | None]:
    checker = SignatureChecker()
    return [checker.check(e) for e in entries]


def test_messages_are_domain_separated() -> None:
    assert entry_message("ab" * 32) == b"consortium-ledger-entry/1\n" + b"ab" * 32
    payload = {"vote": "yes", "proposal_id": 3}
    assert actor_message("vote.cast", payload) == ACTOR_TAG + canonical_json(
        {"event_type": "vote.cast", "payload": payload})


def test_redacted_entries_keep_the_hub_signature_and_drop_the_actor_signature() -> None:
    built = build_ledger(40, HUB, [NORTH], random.Random(1), "ab" * 16)
    votes = [i for i, e in enumerate(built.entries) if e.event_type == VOTE]
    assert votes and all(built.entries[i].actor_signature for i in votes)
    shown = [redact(e) if i in votes else e for i, e in enumerate(built.entries)]
    assert all(shown[i].actor_signature is None and shown[i].signature for i in votes)
    assert problems(built.entries) == problems(shown) == [None] * 40
    forged = replace(built.entries[votes[0]], actor_signature=NORTH.sign(b"other"))
    assert problems([*built.entries[:votes[0]], forged])[-1] == \
        f"the actor signature of entry {votes[0] + 1} does not verify"


def test_unsigned_entries_are_old_ones_only_and_new_hub_keys_need_an_old_signature() -> None:
    old = append(None, "org.admitted", "user:admin", {"org": "north"}, T)
    announce = sign_entry(append(old, "hub.key", "hub", hub_key_payload(HUB.public_key_b64), T, "00" * 16),
                          HUB.key_id, HUB.sign)
    after = append(announce, "org.admitted", "hub", {"org": "south"}, T, "01" * 16)
    assert problems([old, announce, after]) == [None, None, "entry 3 is not signed, yet entry 2 before it was"]
    rotate = append(announce, "hub.key", "hub", hub_key_payload(NEW.public_key_b64), T, "02" * 16)
    by_old = sign_entry(rotate, HUB.key_id, HUB.sign)
    then = sign_entry(append(by_old, "org.admitted", "hub", {"org": "south"}, T, "03" * 16), NEW.key_id, NEW.sign)
    assert problems([old, announce, by_old, then]) == [None] * 4
    self_signed = sign_entry(rotate, NEW.key_id, NEW.sign)
    assert problems([old, announce, self_signed])[-1] == \
        "hub.key entry 3 announces a new hub key but is not signed by an announced one"
