"""Org key rotation on SQLite and PostgreSQL: signed by the old key over the rotation statement, the old key
retired (its requests refused), everything it signed before still verifying; forged or replayed rotations
change nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium import crypto
from consortium.crypto import OrgIdentity
from consortium.governance import statements
from consortium.hub.db.models import LedgerEntry, Node, Org, OrgKey
from consortium.hub.services import hub_identity, identity, ledger, org_keys
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden, Unauthorized
from consortium.hub.services.identity import Principal
from consortium.ledger.audit import audit
from consortium.ledger.signatures import ActorSignature, actor_message
from consortium.protocol import EnrolRequest, Role

NOW = datetime.now(UTC).replace(microsecond=0)


def fresh(name: str) -> OrgIdentity:
    return OrgIdentity.from_private_key(name, Ed25519PrivateKey.generate())


def enrolled(session: Session, name: str) -> tuple[Principal, OrgIdentity]:
    """An admitted org whose node enrolled (its first key in org_keys, a node.enrolled entry)."""
    org = Org(name=name, status="admitted")
    session.add(org)
    session.commit()
    admin = Principal("user", "admin", Role.admin, None, None)
    token, _ = identity.issue_enrolment_token(session, admin, name, NOW)
    key = fresh(name)
    identity.enrol(session, EnrolRequest(org=name, token=token, public_key=key.public_key_b64), NOW)
    return Principal("org", name, Role.steward, org.id, name), key


def rotation(session: Session, old: OrgIdentity, new: OrgIdentity, signer: OrgIdentity | None = None,
             hub_id: str | None = None) -> tuple[str, str]:
    statement = statements.key_rotation_statement(
        hub_id=hub_id or hub_identity.hub_id(session), org=old.org, old_key_id=old.key_id, key_id=new.key_id,
        public_key=new.public_key_b64)
    return new.public_key_b64, (signer or old).sign(statements.key_rotation_message(statement))


def snapshot(session: Session) -> tuple:
    session.rollback()
    return (session.scalar(select(func.count()).select_from(LedgerEntry)),
            sorted(session.execute(select(OrgKey.key_id, OrgKey.retired_at)).all()),
            sorted(session.execute(select(Org.name, Org.key_id)).all()),
            sorted(session.scalars(select(Node.key_id))))


def signed_call(session: Session, key: OrgIdentity) -> identity.SignedCall:
    headers = crypto.sign_request(key, "GET", "/api/me", b"", now=NOW.timestamp())
    return identity.verify_signature(session, headers, "GET", "/api/me", b"", NOW)


def test_a_rotation_hands_over_to_the_new_key_and_old_signatures_still_verify(session: Session) -> None:
    north, old = enrolled(session, "north")
    vote = {"note": "signed before the rotation"}
    ledger.record(session, "org.statement", north.label, vote, scope=ledger.MEMBERS,
                  actor_signature=ActorSignature(old.key_id, old.sign(actor_message("org.statement", vote))))
    session.commit()
    new = fresh("north")
    org, retired = org_keys.rotate(session, north, "north", *rotation(session, old, new), NOW)
    assert retired == old.key_id and (org.key_id, org.public_key) == (new.key_id, new.public_key_b64)
    assert set(session.scalars(select(Node.key_id))) == {new.key_id}
    history = org_keys.history(session, org)
    assert [(k.key_id, k.retired_at is not None) for k in history] == [
        (old.key_id, True), (new.key_id, False)]
    assert history[1].rotation_signature is not None
    entry = session.scalar(select(LedgerEntry).where(LedgerEntry.event_type == "org.key_rotated"))
    assert entry.payload["old_key_id"] == old.key_id and entry.payload["key_id"] == new.key_id
    assert entry.payload["public_key"] == new.public_key_b64
    assert entry.actor_key_id == old.key_id and entry.actor_signature == history[1].rotation_signature
    assert signed_call(session, new).principal.org_name == "north"
    with pytest.raises(Unauthorized, match="unknown or revoked key"):
        signed_call(session, old)
    after = {"note": "signed after the rotation"}
    ledger.record(session, "org.statement", north.label, after, scope=ledger.MEMBERS,
                  actor_signature=ActorSignature(new.key_id, new.sign(actor_message("org.statement", after))))
    session.commit()
    report = audit(ledger.to_chained(e) for e in ledger.iter_entries(session))
    assert report.ok, report.reason


def test_a_rotation_entry_not_signed_by_the_retired_key_fails_the_audit(session: Session) -> None:
    enrolled(session, "north")
    _, south_key = enrolled(session, "south")
    north_key = session.scalar(select(Org.key_id).where(Org.name == "north"))
    new = fresh("north")
    statement = statements.key_rotation_statement(
        hub_id=hub_identity.hub_id(session), org="north", old_key_id=north_key, key_id=new.key_id,
        public_key=new.public_key_b64)
    ledger.record(session, statements.KEY_ROTATION_EVENT, "org:south", statement, scope=ledger.MEMBERS,
                  actor_signature=ActorSignature(south_key.key_id,
                                                 south_key.sign(statements.key_rotation_message(statement))))
    session.commit()
    report = audit(ledger.to_chained(e) for e in ledger.iter_entries(session))
    assert not report.ok and "not signed by the key it retires" in report.reason


@pytest.mark.parametrize("attack", ["bad signature", "other org's key", "other hub", "reused key",
                                    "same key", "malformed key", "a user", "another org"])
def test_a_forged_or_replayed_rotation_is_refused_and_changes_nothing(session: Session, attack: str) -> None:
    north, old = enrolled(session, "north")
    south, south_key = enrolled(session, "south")
    new = fresh("north")
    caller, org_name, (public_key, signature) = north, "north", rotation(session, old, new)
    expected: type[Exception] = BadRequest
    if attack == "bad signature":
        signature = old.sign(b"something else")
    elif attack == "other org's key":
        public_key, signature = rotation(session, old, new, signer=south_key)
    elif attack == "other hub":
        public_key, signature = rotation(session, old, new, hub_id="ab" * 16)
    elif attack == "reused key":
        public_key, signature = rotation(session, old, south_key)
        expected = Conflict
    elif attack == "same key":
        public_key, signature = old.public_key_b64, old.sign(b"x")
        expected = Conflict
    elif attack == "malformed key":
        public_key = "not-a-key"
    elif attack == "a user":
        caller, expected = Principal("user", "admin", Role.admin, None, None), Forbidden
    else:
        caller, expected = south, Forbidden
    before = snapshot(session)
    with pytest.raises(expected):
        org_keys.rotate(session, caller, org_name, public_key, signature, NOW)
    assert snapshot(session) == before


def test_a_rotation_cannot_be_replayed_after_it_happened(session: Session) -> None:
    north, old = enrolled(session, "north")
    first, second = fresh("north"), fresh("north")
    once = rotation(session, old, first)
    org_keys.rotate(session, north, "north", *once, NOW)
    before = snapshot(session)
    with pytest.raises(Conflict):
        org_keys.rotate(session, north, "north", *once, NOW)
    with pytest.raises(BadRequest, match="signature"):
        org_keys.rotate(session, north, "north", *rotation(session, old, second), NOW)
    assert snapshot(session) == before
    org_keys.rotate(session, north, "north", *rotation(session, first, second), NOW)
    assert [k.key_id for k in org_keys.history(session, session.get(Org, north.org_id))] == [
        old.key_id, first.key_id, second.key_id]


def test_a_retired_key_cannot_enrol_a_node_again(session: Session, tmp_path: Path) -> None:
    north, old = enrolled(session, "north")
    org_keys.rotate(session, north, "north", *rotation(session, old, fresh("north")), NOW)
    admin = Principal("user", "admin", Role.admin, None, None)
    for org in ("north", "west"):
        if org == "west":
            session.add(Org(name="west", status="admitted"))
            session.commit()
        token, _ = identity.issue_enrolment_token(session, admin, org, NOW)
        with pytest.raises(Conflict):
            identity.enrol(session, EnrolRequest(org=org, token=token, public_key=old.public_key_b64,
                                                 node_name="second"), NOW)
