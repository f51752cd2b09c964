"""Challenges: open (the host's signed statement), list, submit (weights or a released model), the boards; and
the host node's routes (what to score, a submission's weights, post a signed score)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from consortium.challenge_wire import (
    ChallengeCreate,
    ChallengeOut,
    LeaderboardOut,
    ModelSubmission,
    PendingEvaluation,
    PlacingOut,
    ScoreIn,
    ScoreOut,
    SubmissionOut,
)
from consortium.hub.db.challenge_models import Challenge, ChallengeSubmission
from consortium.hub.deps import db, hub_state, org_principal, principal
from consortium.hub.gate import upload
from consortium.hub.services import challenges as service
from consortium.hub.services.identity import Principal
from consortium.hub.state import HubState
from consortium.hub.wire import Id, StrictJSONRoute
from consortium.protocol import SAFETENSORS_MEDIA_TYPE, AlgorithmSpec

router = APIRouter(prefix="/api", tags=["challenges"], route_class=StrictJSONRoute)


def _out(session: Session, state: HubState, challenge: Challenge) -> ChallengeOut:
    count = len(service.scored(session, challenge))
    return ChallengeOut(id=challenge.id, status=service.status(challenge, state.clock()),
                        statement=service.statement_of(challenge), opened_seq=challenge.opened_seq,
                        submissions=count)


def _score(row: ChallengeSubmission, part: str) -> ScoreOut | None:
    seq = getattr(row, f"{part}_seq")
    if seq is None:
        return None
    return ScoreOut(score=getattr(row, f"{part}_score"), error=getattr(row, f"{part}_error") or "",
                    ledger_seq=seq)


def _submission(session: Session, row: ChallengeSubmission, show_private: bool) -> SubmissionOut:
    return SubmissionOut(id=row.id, challenge_id=row.challenge_id, org=service.org_names(session)[row.org_id],
                         team=list(row.team), model_id=row.model_id, weights_sha256=row.weights_sha256,
                         algorithm=AlgorithmSpec.model_validate(row.algorithm), submitted_at=row.submitted_at,
                         public=_score(row, "public"),
                         private=_score(row, "private") if show_private else None)


@router.post("/challenges", response_model=ChallengeOut, status_code=201)
def open_challenge(body: ChallengeCreate, session: Session = Depends(db),
                   state: HubState = Depends(hub_state), caller: Principal = Depends(principal)):
    return _out(session, state, service.open_challenge(session, caller, body, state.clock()))


@router.get("/challenges", response_model=list[ChallengeOut])
def list_challenges(session: Session = Depends(db), state: HubState = Depends(hub_state),
                    caller: Principal = Depends(principal)):
    return [_out(session, state, c) for c in service.listing(session)]


@router.get("/challenges/{challenge_id}", response_model=ChallengeOut)
def get_challenge(challenge_id: Id, session: Session = Depends(db), state: HubState = Depends(hub_state),
                  caller: Principal = Depends(principal)):
    return _out(session, state, service.get(session, challenge_id))


@router.post("/challenges/{challenge_id}/submissions", response_model=SubmissionOut, status_code=201)
@upload
async def submit_weights(challenge_id: Id, request: Request, state: HubState = Depends(hub_state),
                         caller: Principal = Depends(principal)):
    """Weights (safetensors) with the algorithm spec under ``__metadata__['submission']``."""
    payload = await request.body()

    def store() -> SubmissionOut:
        with state.sessions() as session:
            row = service.submit_weights(session, caller, challenge_id, payload, state.clock(),
                                         state.blobs.put)
            return _submission(session, row, True)

    return await run_in_threadpool(store)


@router.post("/challenges/{challenge_id}/submissions/model", response_model=SubmissionOut, status_code=201)
def submit_model(challenge_id: Id, body: ModelSubmission, session: Session = Depends(db),
                 state: HubState = Depends(hub_state), caller: Principal = Depends(principal)):
    """A released model the caller's org may download, entered for the orgs whose data trained it."""
    row = service.submit_model(session, caller, challenge_id, body, state.clock(), state.blobs.get)
    return _submission(session, row, True)


@router.get("/challenges/{challenge_id}/submissions", response_model=list[SubmissionOut])
def list_submissions(challenge_id: Id, session: Session = Depends(db), state: HubState = Depends(hub_state),
                     caller: Principal = Depends(principal)):
    """The host's view: every submission; anyone else's: its own org's. Private scores only after the
    deadline, or to the host."""
    challenge = service.get(session, challenge_id)
    show = service.may_see_private(challenge, caller, state.clock())
    return [_submission(session, row, show) for row in service.submissions(session, caller, challenge)]


@router.get("/challenges/{challenge_id}/leaderboard", response_model=LeaderboardOut)
def leaderboard(challenge_id: Id, board: Annotated[Literal["public", "final"], Query()] = "public",
                session: Session = Depends(db), state: HubState = Depends(hub_state),
                caller: Principal = Depends(principal)):
    challenge = service.get(session, challenge_id)
    statement = service.statement_of(challenge)
    placings = service.board(session, challenge, board, state.clock())
    return LeaderboardOut(challenge_id=challenge.id, board=board, metric=statement.metric,
                          higher_is_better=statement.higher_is_better, placings=[
                              PlacingOut(rank=p.rank, org=p.org, team=team, submission_id=p.submission_id,
                                         score=p.score, submitted_at=p.submitted_at) for p, team in placings])


@router.get("/node/challenges/pending", response_model=list[PendingEvaluation])
def pending(session: Session = Depends(db), state: HubState = Depends(hub_state),
            caller: Principal = Depends(org_principal)):
    """What the caller's node has to score for the challenges its org hosts."""
    found = service.pending(session, caller, state.clock())
    session.commit()
    return [PendingEvaluation(submission_id=row.id, challenge_id=c.id, challenge=c.name, part=part,
                              weights_sha256=row.weights_sha256,
                              algorithm=AlgorithmSpec.model_validate(row.algorithm))
            for row, c, part in found]


@router.get("/node/challenges/submissions/{submission_id}/weights", response_class=Response, responses={
    200: {"content": {SAFETENSORS_MEDIA_TYPE: {}}, "description": "the submitted weights"}})
def submission_weights(submission_id: Id, session: Session = Depends(db),
                       state: HubState = Depends(hub_state),
                       caller: Principal = Depends(org_principal)) -> Response:
    return Response(state.blobs.get(service.weights_of(session, caller, submission_id)),
                    media_type=SAFETENSORS_MEDIA_TYPE)


@router.post("/node/challenges/submissions/{submission_id}/score", response_model=SubmissionOut)
def post_score(submission_id: Id, body: ScoreIn, session: Session = Depends(db),
               state: HubState = Depends(hub_state), caller: Principal = Depends(org_principal)):
    """The host node's signed score of one part (the private part only after the deadline)."""
    row = service.post_score(session, caller, submission_id, body, state.clock())
    return _submission(session, row, True)
