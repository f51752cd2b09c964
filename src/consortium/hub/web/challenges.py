"""The challenges (``GET /api/challenges``) and each challenge's page: its signed statement, the public board
and, from the deadline on, the final board, from the same service as the API. Like the API, for logged-in
users only."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from consortium.hub.deps import db
from consortium.hub.gate import web
from consortium.hub.services import challenges as challenge_service
from consortium.hub.web.render import WebRoute, caller, login_redirect, page
from consortium.hub.wire import Id

router = APIRouter(route_class=WebRoute, include_in_schema=False)


@router.get("/challenges")
@web
def challenges_page(request: Request, session: Session = Depends(db)) -> Response:
    if caller(request) is None:
        return login_redirect(request)
    now = request.app.state.hub.clock()
    rows = [(c, challenge_service.statement_of(c), challenge_service.status(c, now), len(
        challenge_service.scored(session, c))) for c in challenge_service.listing(session)]
    return page(request, "challenges.html", title="Challenges", challenges=rows)


@router.get("/challenges/{challenge_id}")
@web
def challenge_page(request: Request, challenge_id: Id, session: Session = Depends(db)) -> Response:
    """The statement and the boards: the public one always, the final one once the deadline has passed."""
    if caller(request) is None:
        return login_redirect(request)
    now = request.app.state.hub.clock()
    challenge = challenge_service.get(session, challenge_id)
    final = None if now < challenge.deadline else challenge_service.board(session, challenge, "final", now)
    return page(request, "challenge.html", title=f"Challenge {challenge.name}", challenge=challenge,
                statement=challenge_service.statement_of(challenge),
                status=challenge_service.status(challenge, now),
                public=challenge_service.board(session, challenge, "public", now), final=final)
