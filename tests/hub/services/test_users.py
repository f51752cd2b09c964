"""Users after their creation, on SQLite and PostgreSQL: who lists them, role changes (the admin; a steward
inside its org, never to admin), deactivation (never of the last active admin), token issue and revocation;
revoked tokens and deactivated users get 401 at once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium import crypto
from consortium.hub.db.models import ApiToken, LedgerEntry, Org, User
from consortium.hub.services import identity, users
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from consortium.hub.services.identity import Principal, TokenCache
from consortium.members_wire import UserPatch
from consortium.protocol import Role, UserCreate

NOW = datetime.now(UTC)
ADMIN_TOKEN = "csm_" + "a" * 43


@pytest.fixture
def people(session: Session) -> dict[str, tuple[Principal, str]]:
    """The admin, a steward and a researcher of north, a steward of south, a researcher of no org."""
    identity.ensure_admin(session, ADMIN_TOKEN)
    for name in ("north", "south"):
        session.add(Org(name=name, status="admitted"))
    session.commit()
    admin = identity.authenticate_token(session, ADMIN_TOKEN)
    found = {"admin": (admin, ADMIN_TOKEN)}
    for name, role, org in [("nora", Role.steward, "north"), ("rex", Role.researcher, "north"),
                            ("sam", Role.steward, "south"), ("ida", Role.researcher, None)]:
        _, token = identity.create_user(session, admin, UserCreate(name=name, role=role, org=org))
        found[name] = (identity.authenticate_token(session, token), token)
    return found


def events(session: Session, event_type: str) -> list[dict]:
    return list(session.scalars(select(LedgerEntry.payload).where(LedgerEntry.event_type == event_type)
                                .order_by(LedgerEntry.seq)))


def test_the_admin_lists_everyone_a_steward_its_org_others_nobody(session: Session, people) -> None:
    assert [u.name for u in users.list_users(session, people["admin"][0])] == [
        "admin", "nora", "rex", "sam", "ida"]
    assert [u.name for u in users.list_users(session, people["nora"][0])] == ["nora", "rex"]
    north_key = Principal("org", "north", Role.steward, people["nora"][0].org_id, "north")
    assert [u.name for u in users.list_users(session, north_key)] == ["nora", "rex"]
    for name in ("rex", "ida"):
        with pytest.raises(Forbidden):
            users.list_users(session, people[name][0])


def test_roles_change_within_the_rules(session: Session, people) -> None:
    admin, nora, sam = people["admin"][0], people["nora"][0], people["sam"][0]
    user, _ = users.update_user(session, nora, "rex", UserPatch(role=Role.steward))
    assert user.role == "steward"
    assert events(session, "user.role_changed")[-1] == {"user": "rex", "from": "researcher", "to": "steward"}
    with pytest.raises(Forbidden, match="cannot make an admin"):
        users.update_user(session, nora, "rex", UserPatch(role=Role.admin))
    with pytest.raises(NotFound):
        users.update_user(session, sam, "rex", UserPatch(role=Role.researcher))
    with pytest.raises(Forbidden, match="only the admin"):
        users.update_user(session, nora, "rex", UserPatch(active=False))
    with pytest.raises(BadRequest, match="role: a steward must belong"):
        users.update_user(session, admin, "ida", UserPatch(role=Role.steward))
    with pytest.raises(BadRequest, match="at least one"):
        users.update_user(session, admin, "ida", UserPatch())
    users.update_user(session, admin, "ida", UserPatch(role=Role.admin))
    with pytest.raises(Forbidden, match="a steward cannot make an admin, nor change an admin's role"):
        users.update_user(session, nora, "nora", UserPatch(role=Role.admin))
    assert session.scalar(select(User.role).where(User.name == "rex")) == "steward"


def test_the_consortium_always_keeps_an_active_admin(session: Session, people) -> None:
    admin = people["admin"][0]
    with pytest.raises(Forbidden, match="your own role"):
        users.update_user(session, admin, "admin", UserPatch(role=Role.researcher))
    with pytest.raises(Conflict, match="last active admin"):
        users.update_user(session, admin, "admin", UserPatch(active=False))
    users.update_user(session, admin, "ida", UserPatch(role=Role.admin))
    ida = identity.authenticate_token(session, people["ida"][1])
    users.update_user(session, ida, "admin", UserPatch(active=False))
    with pytest.raises(Conflict, match="last active admin"):
        users.update_user(session, ida, "ida", UserPatch(active=False))
    with pytest.raises(Forbidden, match="your own role"):
        users.update_user(session, ida, "ida", UserPatch(role=Role.researcher))
    users.update_user(session, ida, "admin", UserPatch(active=True))
    users.update_user(session, ida, "admin", UserPatch(role=Role.researcher))
    with pytest.raises(Conflict, match="last active admin"):
        users.update_user(session, ida, "ida", UserPatch(active=False))
    assert session.scalars(select(User.name).where(User.role == "admin")).all() == ["ida"]


def test_a_deactivated_user_gets_401_at_once_and_back_when_reactivated(session: Session, people) -> None:
    admin, (_, rex_token) = people["admin"][0], people["rex"]
    cache = TokenCache(ttl_s=60.0)
    cache.remember(rex_token, people["rex"][0], 0.0)
    _, hashes = users.update_user(session, admin, "rex", UserPatch(active=False))
    cache.forget(hashes)
    assert cache.cached(rex_token, 1.0) is None
    with pytest.raises(Unauthorized, match="user 'rex' is deactivated"):
        identity.authenticate_token(session, rex_token)
    with pytest.raises(Conflict, match="deactivated"):
        users.issue_token(session, admin, "rex")
    users.update_user(session, admin, "rex", UserPatch(active=True))
    assert identity.authenticate_token(session, rex_token).name == "rex"
    assert [e["user"] for e in events(session, "user.deactivated") + events(session, "user.reactivated")] == [
        "rex", "rex"]


def test_a_user_revokes_its_own_tokens_the_admin_anyones(session: Session, people) -> None:
    admin, rex, ida = people["admin"][0], people["rex"][0], people["ida"][0]
    second, secret = users.issue_token(session, rex, "rex")
    assert identity.authenticate_token(session, secret).name == "rex"
    first = session.scalar(select(ApiToken.id).join(User).where(User.name == "rex").order_by(ApiToken.id))
    revoked = users.revoke_tokens(session, rex, "rex", NOW, first)
    assert [r.id for r in revoked] == [first]
    with pytest.raises(Unauthorized):
        identity.authenticate_token(session, people["rex"][1])
    assert identity.authenticate_token(session, secret).name == "rex"
    assert users.revoke_tokens(session, rex, "rex", NOW, first) == []
    with pytest.raises(NotFound):
        users.revoke_tokens(session, ida, "rex", NOW)
    with pytest.raises(NotFound):
        users.tokens(session, ida, "rex")
    with pytest.raises(NotFound, match="no token"):
        users.revoke_tokens(session, rex, "rex", NOW, 10**6)
    assert [r.id for r in users.revoke_tokens(session, admin, "rex", NOW)] == [second.id]
    with pytest.raises(Unauthorized):
        identity.authenticate_token(session, secret)
    assert [t.revoked_at is not None for t in users.tokens(session, rex, "rex")] == [True, True]
    assert [e["token_id"] for e in events(session, "user.token_revoked")] == [first, second.id]
    assert crypto.hash_token(secret) == second.token_hash
