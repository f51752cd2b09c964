"""Users and their API tokens: listing, role changes, deactivation, issuing and revoking tokens."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from consortium.hub.db.models import ApiToken, User
from consortium.hub.deps import db, hub_state, principal
from consortium.hub.services import users
from consortium.hub.services.identity import Principal
from consortium.hub.state import HubState
from consortium.hub.wire import Id, Name, StrictJSONRoute
from consortium.members_wire import NewToken, TokenInfo, UserInfo, UserPatch

router = APIRouter(prefix="/api", tags=["members"], route_class=StrictJSONRoute)


def _user_out(user: User) -> UserInfo:
    return UserInfo(id=user.id, name=user.name, role=user.role, org=user.org.name if user.org else None,
                    active=user.active, created_at=user.created_at)


def _token_out(row: ApiToken, name: str) -> TokenInfo:
    return TokenInfo(id=row.id, user=name, created_at=row.created_at, revoked_at=row.revoked_at)


@router.get("/users", response_model=list[UserInfo])
def list_users(session: Session = Depends(db), caller: Principal = Depends(principal)):
    return [_user_out(u) for u in users.list_users(session, caller)]


@router.patch("/users/{name}", response_model=UserInfo)
def update_user(name: Name, body: UserPatch, session: Session = Depends(db),
                caller: Principal = Depends(principal), state: HubState = Depends(hub_state)):
    user, hashes = users.update_user(session, caller, name, body)
    state.tokens.forget(hashes)
    return _user_out(user)


@router.get("/users/{name}/tokens", response_model=list[TokenInfo])
def list_tokens(name: Name, session: Session = Depends(db), caller: Principal = Depends(principal)):
    return [_token_out(row, name) for row in users.tokens(session, caller, name)]


@router.post("/users/{name}/tokens", response_model=NewToken, status_code=201)
def issue_token(name: Name, session: Session = Depends(db), caller: Principal = Depends(principal)):
    row, secret = users.issue_token(session, caller, name)
    return NewToken(id=row.id, user=name, token=secret)


@router.delete("/users/{name}/tokens", response_model=list[TokenInfo])
def revoke_all_tokens(name: Name, session: Session = Depends(db), caller: Principal = Depends(principal),
                      state: HubState = Depends(hub_state)):
    revoked = users.revoke_tokens(session, caller, name, datetime.now(UTC))
    state.tokens.forget(row.token_hash for row in revoked)
    return [_token_out(row, name) for row in revoked]


@router.delete("/users/{name}/tokens/{token_id}", response_model=list[TokenInfo])
def revoke_token(name: Name, token_id: Id, session: Session = Depends(db),
                 caller: Principal = Depends(principal), state: HubState = Depends(hub_state)):
    revoked = users.revoke_tokens(session, caller, name, datetime.now(UTC), token_id)
    state.tokens.forget(row.token_hash for row in revoked)
    return [_token_out(row, name) for row in revoked]
