"""Proposals, votes and the consortium policy."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from consortium.governance.policy import ProposalKind
from consortium.governance.wire import PolicyOut, ProposalCreate, ProposalOut, VoteIn, VoteOut, WithdrawIn
from consortium.hub.deps import db, principal
from consortium.hub.services import proposal_views, proposals
from consortium.hub.services.identity import Principal
from consortium.hub.wire import Id, StrictJSONRoute

router = APIRouter(prefix="/api", tags=["governance"], route_class=StrictJSONRoute)


@router.get("/proposals", response_model=list[ProposalOut])
def list_proposals(
    status: Annotated[str | None, Query(pattern=r"^(open|passed|rejected|expired|withdrawn)$")] = None,
    kind: Annotated[ProposalKind | None, Query()] = None,
    project_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    session: Session = Depends(db), caller: Principal = Depends(principal),
):
    proposals.settle_due(session)
    session.commit()
    rows = proposals.listed(session, caller, status=status, kind=kind.value if kind else None,
                            project_id=project_id)
    return [proposal_views.to_out(session, row) for row in rows]


@router.get("/proposals/{proposal_id}", response_model=ProposalOut)
def get_proposal(proposal_id: Id, session: Session = Depends(db), caller: Principal = Depends(principal)):
    row = proposals.visible(session, caller, proposal_id)
    proposals.settle(session, row)
    session.commit()
    return proposal_views.to_out(session, row)


@router.post("/proposals", response_model=ProposalOut, status_code=201)
def create_proposal(body: ProposalCreate, session: Session = Depends(db), caller: Principal = Depends(principal)):
    return proposal_views.to_out(session, proposal_views.create(session, caller, body))


@router.post("/proposals/{proposal_id}/votes", response_model=VoteOut, status_code=201)
def vote(proposal_id: Id, body: VoteIn, session: Session = Depends(db), caller: Principal = Depends(principal)):
    cast = proposals.vote(session, caller, proposal_id, choice=body.choice, reason=body.reason,
                          content_hash=body.content_hash, signature=body.signature)
    row = proposals.visible(session, caller, proposal_id)
    return VoteOut(org=cast.org.name, choice=cast.choice, reason=cast.reason, cast_at=cast.cast_at,
                   signature=cast.signature,
                   counted=cast.org.name in proposals.voters(row))


@router.post("/proposals/{proposal_id}/withdraw", response_model=ProposalOut)
def withdraw(proposal_id: Id, body: WithdrawIn, session: Session = Depends(db),
             caller: Principal = Depends(principal)):
    return proposal_views.to_out(session, proposals.withdraw(session, caller, proposal_id, body.reason))


@router.get("/policy", response_model=PolicyOut)
def get_policy(session: Session = Depends(db), caller: Principal = Depends(principal)):
    return proposal_views.policy_out(session)
