"""Voting in the browser, signed by the organisation's key in the page.

The proposal page gives a steward of a voting org the vote statement's fields (hub id, proposal, content
hash, org); ``static/sign.js`` reads the org's key file (the PEM ``org.key`` the CLI writes) into the page,
imports it with WebCrypto, signs :func:`consortium.governance.statements.vote_message` of the statement and
posts only the signature. The key never leaves the page. The hub checks the vote exactly as it checks
``POST /api/proposals/{id}/votes`` (:func:`consortium.hub.services.proposals.vote`), and each vote shown is
re-checked against the org's keys (:func:`vote_checks`).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from consortium import crypto
from consortium.governance import statements
from consortium.governance.wire import VoteIn
from consortium.hub.db.models import Org, OrgKey, Proposal
from consortium.hub.deps import db
from consortium.hub.gate import web
from consortium.hub.services import hub_identity, proposal_views, proposals
from consortium.hub.services.errors import ServiceError
from consortium.hub.services.identity import Principal
from consortium.hub.web.render import WebRoute, caller, page, posted
from consortium.hub.wire import Id

router = APIRouter(route_class=WebRoute, include_in_schema=False)
FIELDS = ("choice", "reason", "content_hash", "signature")


def vote_checks(session: Session, row: Proposal) -> dict[str, bool]:
    """For each org that voted: whether its stored signature verifies over its vote statement with a key
    the org holds or held."""
    hub_id = hub_identity.hub_id(session)
    checks = {}
    for vote in proposals.votes_of(session, row):
        keys = set(session.scalars(select(OrgKey.public_key).where(OrgKey.org_id == vote.org_id)))
        keys.update(k for k in (vote.org.public_key,) if k)
        try:
            message = statements.vote_message(statements.vote_statement(
                hub_id=hub_id, proposal_id=row.id, content_hash=row.content_hash, org=vote.org.name,
                choice=vote.choice, reason=vote.reason))
        except ValueError:
            checks[vote.org.name] = False
            continue
        checks[vote.org.name] = any(crypto.verify_signature(k, message, vote.signature) for k in keys)
    return checks


def ballot(session: Session, who: Principal | None, row: Proposal) -> dict | None:
    """What the vote form needs when ``who`` may vote on ``row`` now (a steward of a voting org, the
    proposal open), else None."""
    if who is None or who.org_id is None or not who.acts_for(who.org_id) or row.status != "open":
        return None
    if who.org_name not in {*proposals.voters(row), *row.advisory}:
        return None
    org = session.get(Org, who.org_id)
    if org is None or org.public_key is None:
        return None
    return {"hub_id": hub_identity.hub_id(session), "proposal_id": row.id, "content_hash": row.content_hash,
            "org": org.name, "public_key": org.public_key, "key_id": org.key_id}


def _problems(error: ValidationError) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else "choice"
        found.setdefault(name, item["msg"])
    return found


def proposal_view(request: Request, session: Session, row: Proposal, status_code: int = 200,
                  problems: dict[str, str] | None = None, values: dict[str, str] | None = None,
                  notice: str | None = None) -> Response:
    """The proposal page (votes re-checked, the vote form for who may vote)."""
    who = caller(request)
    return page(request, "proposal.html", status_code=status_code, title=f"Proposal {row.id}",
                proposal=proposal_views.to_out(session, row), project_id=row.project_id,
                checks=vote_checks(session, row), ballot=ballot(session, who, row),
                problems=problems or {}, values=values or {}, notice=notice)


@router.post("/proposals/{proposal_id}/vote")
@web
async def cast(request: Request, proposal_id: Id, session: Session = Depends(db)) -> Response:
    answer = await posted(request)
    if isinstance(answer, Response):
        return answer
    fields, who = answer
    proposals.visible(session, who, proposal_id)  # a proposal the caller may not see: 404, as missing
    values = {name: fields.get(name, "") for name in FIELDS}
    try:
        body = VoteIn(**values)
    except ValidationError as exc:
        problems = _problems(exc)
    else:
        problems = {} if body.signature else {
            "signature": "no signature: load your organisation's key file (org.key) so that the page signs "
                         "the vote (this needs JavaScript)"}
    if not problems:
        try:
            proposals.vote(session, who, proposal_id, choice=body.choice, reason=body.reason,
                           content_hash=body.content_hash, signature=body.signature)
        except ServiceError as exc:
            session.rollback()
            name, _, message = exc.message.partition(": ")
            problems = {name: message} if name in FIELDS and message else {"choice": exc.message}
            status = exc.status_code
        else:
            return RedirectResponse(f"/proposals/{proposal_id}?voted=1", status_code=303)
    else:
        status = 422
    session.expire_all()
    return proposal_view(request, session, session.get(Proposal, proposal_id), status, problems, values)
