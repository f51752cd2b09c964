"""The key rotation statement (pure): what an org's old key signs to hand over to a new key, and how it
refuses anything malformed."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.crypto import OrgIdentity, verify_signature
from consortium.governance import statements
from consortium.ledger.signatures import ORG_KEY_EVENTS, actor_message

HUB = "0123456789abcdef" * 2
OLD = OrgIdentity.from_private_key("north", Ed25519PrivateKey.generate())
NEW = OrgIdentity.from_private_key("north", Ed25519PrivateKey.generate())


def statement(**changes) -> dict:
    fields = {"hub_id": HUB, "org": "north", "old_key_id": OLD.key_id, "key_id": NEW.key_id,
              "public_key": NEW.public_key_b64} | changes
    return statements.key_rotation_statement(**fields)


def test_the_statement_is_the_ledger_entry_the_old_key_vouches_for() -> None:
    made = statement()
    assert made == {"type": statements.KEY_ROTATION_TYPE, "hub_id": HUB, "org": "north",
                    "old_key_id": OLD.key_id, "key_id": NEW.key_id, "public_key": NEW.public_key_b64}
    assert statements.key_rotation_message(made) == actor_message(statements.KEY_ROTATION_EVENT, made)
    assert statements.KEY_ROTATION_EVENT in ORG_KEY_EVENTS


@pytest.mark.parametrize(("changes", "field"), [
    ({"hub_id": "xyz"}, "hub_id"),
    ({"org": ""}, "org"),
    ({"old_key_id": "ABC"}, "old_key_id"),
    ({"key_id": OLD.key_id}, "public_key"),
    ({"public_key": "not base64!"}, "public"),
    ({"key_id": OLD.key_id, "public_key": OLD.public_key_b64}, "key_id: the new key must differ"),
])
def test_a_malformed_statement_is_refused(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        statement(**changes)


def test_the_message_rechecks_a_statement_changed_after_it_was_made() -> None:
    made = statement() | {"public_key": OLD.public_key_b64}
    with pytest.raises(ValueError, match="public_key"):
        statements.key_rotation_message(made)


FIELDS = {"hub_id": st.sampled_from(["ab" * 16, "cd" * 16]), "org": st.sampled_from(["north", "south"]),
          "old_key_id": st.sampled_from([OLD.key_id, "0" * 16])}


@settings(max_examples=200, deadline=None)
@given(first=st.fixed_dictionaries(FIELDS), second=st.fixed_dictionaries(FIELDS))
def test_a_signature_covers_exactly_one_hub_org_and_pair_of_keys(first: dict, second: dict) -> None:
    signature = OLD.sign(statements.key_rotation_message(statement(**first)))
    message = statements.key_rotation_message(statement(**second))
    verifies = verify_signature(OLD.public_key_b64, message, signature)
    assert verifies == (first == second)
