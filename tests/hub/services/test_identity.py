"""Signed requests whose nonce rides in the request's own write transaction (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from consortium import crypto
from consortium.hub.db.models import Org, SeenNonce
from consortium.hub.services import identity
from consortium.hub.services.errors import Conflict, Unauthorized

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def org_key(session: Session) -> crypto.OrgIdentity:
    key = crypto.OrgIdentity.from_private_key("north", Ed25519PrivateKey.generate())
    session.add(Org(name="north", public_key=key.public_key_b64, key_id=key.key_id))
    session.commit()
    return key


def signed(key: crypto.OrgIdentity, body: bytes = b"{}") -> dict[str, str]:
    return crypto.sign_request(key, "POST", "/api/node/tasks/1/result", body, now=NOW.timestamp())


def verify(session: Session, headers: dict[str, str], body: bytes = b"{}") -> identity.SignedCall:
    return identity.verify_signature(session, headers, "POST", "/api/node/tasks/1/result", body, NOW)


def orgs_named(session: Session, name: str) -> int:
    return session.scalar(select(func.count()).select_from(Org).where(Org.name == name))


def nonces(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(SeenNonce))


def write_org(session: Session, call: identity.SignedCall, name: str) -> str:
    """Stand-in for a request's write: the nonce, then the change, one commit."""
    call.record_nonce(session)
    session.add(Org(name=name))
    session.commit()
    return name


def test_the_nonce_and_the_write_share_one_commit(session, org_key) -> None:
    headers = signed(org_key)
    call = verify(session, headers)
    assert call.principal.org_name == "north" and nonces(session) == 0
    commits = [0]
    event.listen(session, "after_commit", lambda _s: commits.__setitem__(0, commits[0] + 1))
    assert identity.in_signed_transaction(session, call, lambda: write_org(session, call, "w1")) == "w1"
    assert commits == [1] and nonces(session) == 1 and orgs_named(session, "w1") == 1


def test_a_replayed_write_is_401_and_changes_nothing(session, org_key) -> None:
    headers = signed(org_key)
    first = verify(session, headers)
    identity.in_signed_transaction(session, first, lambda: write_org(session, first, "w1"))
    again = verify(session, headers)
    with pytest.raises(Unauthorized, match="replayed"):
        identity.in_signed_transaction(session, again, lambda: write_org(session, again, "w2"))
    assert orgs_named(session, "w2") == 0 and nonces(session) == 1


def test_a_failed_request_still_uses_up_its_nonce(session, org_key) -> None:
    headers = signed(org_key)
    call = verify(session, headers)

    def fails_after_recording() -> None:
        call.record_nonce(session)
        session.add(Org(name="half-done"))
        session.flush()
        raise Conflict("the task changed state")

    with pytest.raises(Conflict):
        identity.in_signed_transaction(session, call, fails_after_recording)
    assert orgs_named(session, "half-done") == 0 and nonces(session) == 1
    again = verify(session, headers)
    with pytest.raises(Unauthorized, match="replayed"):
        identity.in_signed_transaction(session, again, lambda: write_org(session, again, "w3"))


def test_a_replay_that_fails_before_its_write_is_still_401(session, org_key) -> None:
    def already_answered() -> None:
        raise Conflict("task 1 already has a result")

    headers = signed(org_key)
    with pytest.raises(Conflict):
        identity.in_signed_transaction(session, verify(session, headers), already_answered)
    with pytest.raises(Unauthorized, match="replayed"):
        identity.in_signed_transaction(session, verify(session, headers), already_answered)
    assert nonces(session) == 1


def test_a_request_without_a_write_gets_its_nonce_committed_alone(session, org_key) -> None:
    headers = signed(org_key)
    call = verify(session, headers)
    assert identity.in_signed_transaction(session, call, lambda: "read only") == "read only"
    assert nonces(session) == 1
    with pytest.raises(Unauthorized, match="replayed"):
        identity.authenticate_signature(session, headers, "POST", "/api/node/tasks/1/result", b"{}", NOW)


def test_a_bad_signature_is_401_before_any_nonce_is_used(session, org_key) -> None:
    headers = signed(org_key)
    with pytest.raises(Unauthorized, match="bad signature"):
        verify(session, headers, body=b'{"tampered": true}')
    assert nonces(session) == 0
    identity.authenticate_signature(session, headers, "POST", "/api/node/tasks/1/result", b"{}", NOW)
    assert nonces(session) == 1


def test_verifying_with_a_cached_key_needs_no_database_and_checks_the_same(session, org_key) -> None:
    keys = identity.KeyCache(ttl_s=60.0)
    headers = signed(org_key)
    path = "/api/node/tasks/1/result"
    assert identity.verify_signature_cached(headers, "POST", path, b"{}", NOW, keys) is None
    identity.verify_signature(session, headers, "POST", path, b"{}", NOW, keys=keys)
    call = identity.verify_signature_cached(headers, "POST", path, b"{}", NOW, keys)
    assert call is not None and call.principal.org_name == "north" and not call.recorded
    with pytest.raises(Unauthorized, match="bad signature"):
        identity.verify_signature_cached(headers, "POST", path, b'{"tampered": true}', NOW, keys)
    with pytest.raises(Unauthorized, match="timestamp"):
        identity.verify_signature_cached(headers, "POST", path, b"{}", NOW.replace(year=NOW.year + 1), keys)
    assert nonces(session) == 0


def test_one_lookup_reconfirms_every_stale_key_and_drops_a_suspended_one(session) -> None:
    keys = identity.KeyCache(ttl_s=5.0)
    orgs = {}
    for name in ("east", "west", "south"):
        key = crypto.OrgIdentity.from_private_key(name, Ed25519PrivateKey.generate())
        orgs[name] = Org(name=name, public_key=key.public_key_b64, key_id=key.key_id)
        session.add(orgs[name])
    session.commit()
    for org in orgs.values():
        assert keys.get(session, org.key_id, 100.0).org_name == org.name
    orgs["south"].status = "suspended"
    session.commit()
    queries: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        queries.append(statement)

    event.listen(session.get_bind(), "before_cursor_execute", count)
    try:
        assert keys.get(session, orgs["east"].key_id, 106.0).org_name == "east"
        assert keys.cached(orgs["west"].key_id, 106.0).org_name == "west"
        assert keys.cached(orgs["south"].key_id, 106.0) is None
        assert keys.get(session, orgs["south"].key_id, 106.0) is None
    finally:
        event.remove(session.get_bind(), "before_cursor_execute", count)
    assert len(queries) == 2  # the first lookup confirmed west as well; south was looked up again
    assert keys.cached(orgs["east"].key_id, 110.9) is not None and keys.cached(orgs["east"].key_id, 111.0) is None
