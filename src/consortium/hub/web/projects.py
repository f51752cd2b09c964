"""Projects (the ones the caller takes part in), each project's page (spec, data, privacy settings, its
proposal's votes and outcome, runs, models) and proposal pages. Like the API, these need a logged-in user;
an anonymous visitor is sent to the login page."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from consortium.hub.db.models import Run
from consortium.hub.deps import db
from consortium.hub.gate import web
from consortium.hub.services import models as model_service
from consortium.hub.services import projects as project_service
from consortium.hub.services import proposal_views, proposals
from consortium.hub.services.access import visible_projects
from consortium.hub.web import votes
from consortium.hub.web.render import WebRoute, caller, login_redirect, page
from consortium.hub.wire import Id
from consortium.protocol import ProjectCreate

router = APIRouter(route_class=WebRoute, include_in_schema=False)


@router.get("/projects")
@web
def projects_page(request: Request, session: Session = Depends(db)) -> Response:
    who = caller(request)
    if who is None:
        return login_redirect(request)
    rows = project_service.summaries(session, visible_projects(session, who))
    return page(request, "projects.html", title="Projects", projects=rows)


@router.get("/projects/{project_id}")
@web
def project_page(request: Request, project_id: Id, session: Session = Depends(db)) -> Response:
    who = caller(request)
    if who is None:
        return login_redirect(request)
    project = project_service.get(session, who, project_id)
    row = project_service.current_proposal(session, project)
    proposals.settle(session, row)
    session.commit()
    spec = ProjectCreate.model_validate(project.spec)
    runs = list(session.scalars(select(Run).where(Run.project_id == project.id).order_by(Run.id)))
    return page(
        request, "project.html", title=f"Project {project.name}",
        project=project_service.to_out(session, project),
        spec=spec, sources=project_service.project_datasets(session, project),
        privacy=spec.privacy.model_dump(mode="json") if spec.privacy is not None else None,
        proposal=proposal_views.to_out(session, row), runs=runs,
        models=model_service.listing(session, who, project_id=project.id, limit=model_service.MAX_PAGE),
    )


@router.get("/proposals/{proposal_id}")
@web
def proposal_page(request: Request, proposal_id: Id, voted: int = 0,
                  session: Session = Depends(db)) -> Response:
    who = caller(request)
    if who is None:
        return login_redirect(request)
    row = proposals.visible(session, who, proposal_id)
    proposals.settle(session, row)
    session.commit()
    return votes.proposal_view(request, session, row,
                               notice="Your organisation's signed vote was recorded." if voted else None)
