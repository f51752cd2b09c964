"""Users after their creation: who sees them, role changes, deactivation, and their API tokens.

The admin manages every user; a steward sees its org's users and may change their roles inside the org (never
to or from admin); every user sees and manages its own tokens. The consortium always keeps an active admin:
nobody deactivates the last one or changes its own role away from admin. Every change is a ledger entry and
takes effect at once: a revoked token, or any token of a deactivated user, gets 401 on its next request (the
caller of these functions forgets the returned token hashes in its token cache).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium import crypto
from consortium.hub.db.models import ApiToken, User
from consortium.hub.services import ledger
from consortium.hub.services.access import is_admin
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden, NotFound
from consortium.hub.services.identity import Principal
from consortium.members_wire import UserPatch
from consortium.protocol import Role


def _is_self(actor: Principal, user: User) -> bool:
    return actor.kind == "user" and actor.name == user.name


def _steward_of(actor: Principal, user: User) -> bool:
    return user.org_id is not None and actor.role == Role.steward and actor.acts_for(user.org_id)


def _user(session: Session, actor: Principal, name: str, may_see) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None or not may_see(actor, user):
        raise NotFound(f"no user named {name!r}")
    return user


def list_users(session: Session, actor: Principal) -> list[User]:
    """Every user for the admin; a steward's (or org key's) own org's users; 403 for anyone else."""
    query = select(User).order_by(User.id)
    if is_admin(actor):
        return list(session.scalars(query))
    if actor.org_id is not None and actor.acts_for(actor.org_id):
        return list(session.scalars(query.where(User.org_id == actor.org_id)))
    raise Forbidden(f"{actor.label} has role {actor.role.value}: only the admin or a steward lists users")


def token_hashes(session: Session, user: User) -> list[str]:
    """The hashes of all the user's tokens (what a token cache must forget when the user changes)."""
    return list(session.scalars(select(ApiToken.token_hash).where(ApiToken.user_id == user.id)))


def _active_admins_but(session: Session, user: User) -> int:
    return session.scalar(select(func.count()).select_from(User).where(
        User.role == Role.admin.value, User.active.is_(True), User.id != user.id))


def update_user(session: Session, actor: Principal, name: str, patch: UserPatch) -> tuple[User, list[str]]:
    """Change a user's role and/or active flag; the user and its token hashes (to forget in caches)."""
    ledger.lock(session)
    user = _user(session, actor, name, lambda a, u: is_admin(a) or _steward_of(a, u) or _is_self(a, u))
    if patch.role is None and patch.active is None:
        raise BadRequest("role, active: give at least one to change")
    if not is_admin(actor):
        if patch.active is not None:
            raise Forbidden("only the admin deactivates or reactivates users")
        if not _steward_of(actor, user):
            raise Forbidden(f"{actor.label} cannot change the role of {user.name!r}")
        if Role.admin in (patch.role, Role(user.role)):
            raise Forbidden("a steward cannot make an admin, nor change an admin's role")
    events = []
    if patch.role is not None and patch.role.value != user.role:
        if user.role == Role.admin.value and _is_self(actor, user):
            raise Forbidden("you cannot change your own role away from admin: another admin must")
        if patch.role == Role.steward and user.org_id is None:
            raise BadRequest("role: a steward must belong to an organisation")
        if user.role == Role.admin.value and user.active and _active_admins_but(session, user) == 0:
            raise Conflict(f"{user.name!r} is the last active admin: make another admin first")
        events.append(("user.role_changed", {"user": user.name, "from": user.role, "to": patch.role.value}))
        user.role = patch.role.value
    if patch.active is not None and patch.active != user.active:
        if not patch.active and user.role == Role.admin.value and _active_admins_but(session, user) == 0:
            raise Conflict(f"{user.name!r} is the last active admin: it cannot be deactivated")
        events.append(("user.deactivated" if not patch.active else "user.reactivated", {"user": user.name}))
        user.active = patch.active
    ledger.record_many(session, [(event, actor.label, payload) for event, payload in events],
                       scope=ledger.MEMBERS)
    session.commit()
    return user, token_hashes(session, user)


def _token_owner(session: Session, actor: Principal, name: str) -> User:
    """The user whose tokens the caller manages: itself, or any user for the admin (404 otherwise)."""
    return _user(session, actor, name, lambda a, u: is_admin(a) or _is_self(a, u))


def tokens(session: Session, actor: Principal, name: str) -> list[ApiToken]:
    user = _token_owner(session, actor, name)
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)))


def issue_token(session: Session, actor: Principal, name: str) -> tuple[ApiToken, str]:
    """A new API token for the user (the secret is returned once)."""
    user = _token_owner(session, actor, name)
    if not user.active:
        raise Conflict(f"user {user.name!r} is deactivated: reactivate it first")
    secret = crypto.new_api_token()
    row = ApiToken(user_id=user.id, token_hash=crypto.hash_token(secret))
    session.add(row)
    session.flush()
    ledger.record(session, "user.token_issued", actor.label, {"user": user.name, "token_id": row.id},
                  scope=ledger.MEMBERS)
    session.commit()
    return row, secret


def revoke_tokens(session: Session, actor: Principal, name: str, now: datetime,
                  token_id: int | None = None) -> list[ApiToken]:
    """Revoke one of the user's tokens (``token_id``) or all its live ones; the tokens revoked now (a token
    already revoked is left as it was). 404 for a token that is not the user's."""
    user = _token_owner(session, actor, name)
    query = select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
    if token_id is not None:
        query = query.where(ApiToken.id == token_id)
    rows = list(session.scalars(query))
    if token_id is not None and not rows:
        raise NotFound(f"no token {token_id} of user {user.name!r}")
    revoked = [row for row in rows if row.revoked_at is None]
    for row in revoked:
        row.revoked_at = now
    ledger.record_many(session, [
        ("user.token_revoked", actor.label, {"user": user.name, "token_id": row.id}) for row in revoked
    ], scope=ledger.MEMBERS)
    session.commit()
    return revoked
