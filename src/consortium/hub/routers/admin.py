"""Members: organisations, node enrolment and users."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.hub.db.models import Org
from consortium.hub.deps import db, hub_state, principal
from consortium.hub.gate import enrolment
from consortium.hub.state import HubState
from consortium.hub.services import identity, members, org_keys
from consortium.hub.services.identity import Principal
from consortium.hub.wire import Name, StrictJSONRoute
from consortium.members_wire import KeyRotationIn, OrgKeyOut
from consortium.protocol import (
    EnrolmentTokenOut,
    EnrolRequest,
    EnrolResponse,
    OrgCreate,
    OrgOut,
    TokenOut,
    UserCreate,
    UserOut,
)

router = APIRouter(prefix="/api", tags=["members"], route_class=StrictJSONRoute)


def _org_out(org: Org, state: HubState) -> OrgOut:
    seen = state.presence.get(org.id)
    return OrgOut(id=org.id, name=org.name, display_name=org.display_name, status=org.status,
                  public_key=org.public_key, key_id=org.key_id,
                  last_seen_s_ago=None if seen is None else round(time.monotonic() - seen, 3))


@router.post("/orgs", response_model=OrgOut, status_code=201)
def create_org(body: OrgCreate, session: Session = Depends(db), caller: Principal = Depends(principal),
               state: HubState = Depends(hub_state)):
    return _org_out(members.create_org(session, caller, body), state)


@router.get("/orgs", response_model=list[OrgOut])
def list_orgs(session: Session = Depends(db), caller: Principal = Depends(principal),
              state: HubState = Depends(hub_state)):
    return [_org_out(o, state) for o in session.scalars(select(Org).order_by(Org.id))]


@router.post("/orgs/{name}/keys", response_model=OrgOut, status_code=201)
def rotate_key(name: Name, body: KeyRotationIn, session: Session = Depends(db),
               caller: Principal = Depends(principal), state: HubState = Depends(hub_state)):
    """Rotate the org's key: a request signed by its current key, carrying that key's signature over the
    rotation statement. Requests signed by the old key are refused from then on."""
    org, retired = org_keys.rotate(session, caller, name, body.public_key, body.signature, datetime.now(UTC))
    state.keys.forget(retired)
    return _org_out(org, state)


@router.get("/orgs/{name}/keys", response_model=list[OrgKeyOut])
def key_history(name: Name, session: Session = Depends(db), caller: Principal = Depends(principal)):
    """Every key the org has held, oldest first, with the signatures that handed over from one to the next."""
    return [OrgKeyOut(key_id=k.key_id, public_key=k.public_key, created_at=k.created_at,
                      retired_at=k.retired_at, rotation_signature=k.rotation_signature)
            for k in org_keys.history(session, identity.org_by_name(session, name))]


@router.post("/orgs/{name}/enrolment-tokens", response_model=EnrolmentTokenOut, status_code=201)
def issue_enrolment_token(name: Name, session: Session = Depends(db), caller: Principal = Depends(principal)):
    token, expires = identity.issue_enrolment_token(session, caller, name, datetime.now(UTC))
    return EnrolmentTokenOut(org=name, token=token, expires_at=expires)


@router.post("/enrol", response_model=EnrolResponse, status_code=201)
@enrolment
def enrol(body: EnrolRequest, session: Session = Depends(db)):
    node = identity.enrol(session, body, datetime.now(UTC))
    return EnrolResponse(org=body.org, node_id=node.id, key_id=node.key_id)


@router.post("/users", response_model=TokenOut, status_code=201)
def create_user(body: UserCreate, session: Session = Depends(db), caller: Principal = Depends(principal)):
    user, token = identity.create_user(session, caller, body)
    return TokenOut(user=UserOut(id=user.id, name=user.name, role=user.role, org=body.org), token=token)


@router.get("/me")
def me(caller: Principal = Depends(principal)) -> dict:
    return {"kind": caller.kind, "name": caller.name, "role": caller.role.value, "org": caller.org_name}
