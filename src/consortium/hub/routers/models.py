"""Models: the registry (filters, versions of a project's line), each model's card, weights and files. Who
sees a card and who downloads weights and files follows :mod:`consortium.hub.services.model_access`; anonymous
callers reach released public models."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy.orm import Session

from consortium.hub.deps import db, hub_state, optional_principal, principal
from consortium.hub.gate import optional
from consortium.hub.state import HubState
from consortium.hub.services import challenges, credits
from consortium.hub.services import models as model_service
from consortium.hub.services.access import visible_project
from consortium.hub.services.identity import Principal
from consortium.hub.wire import Id, StrictJSONRoute
from consortium.protocol import NAME_PATTERN, SAFETENSORS_MEDIA_TYPE, ModelOut
from consortium.statuses import ModelStatus

router = APIRouter(prefix="/api", tags=["models"], route_class=StrictJSONRoute)


@router.get("/models", response_model=list[ModelOut])
@optional
def list_models(
    project: Annotated[str | None, Query(pattern=NAME_PATTERN, description="the project's name")] = None,
    status: Annotated[ModelStatus | None, Query()] = None,
    licence: Annotated[str | None, Query(min_length=1, max_length=400,
                                         description="part of the licence, or an SPDX expression")] = None,
    org: Annotated[str | None, Query(pattern=NAME_PATTERN, description="a participating org")] = None,
    limit: Annotated[int, Query(ge=1, le=model_service.MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    session: Session = Depends(db), caller: Principal | None = Depends(optional_principal),
):
    """The models the caller may see (anonymous callers: released public ones), oldest first, filtered."""
    rows = model_service.listing(session, caller, project=project, status=status, licence=licence, org=org,
                                 limit=limit, offset=offset)
    return [model_service.to_out(model) for model in rows]


@router.get("/projects/{project_id}/models", response_model=list[ModelOut])
def list_project_models(project_id: Id, session: Session = Depends(db),
                        caller: Principal = Depends(principal)):
    """The versions of a project's model line (one per completed run), oldest first."""
    project = visible_project(session, caller, project_id)
    rows = model_service.listing(session, caller, project_id=project.id, limit=model_service.MAX_PAGE)
    return [model_service.to_out(model) for model in rows]


@router.get("/models/{model_id}", response_model=ModelOut)
@optional
def get_model(
    model_id: Id, session: Session = Depends(db), state: HubState = Depends(hub_state),
    caller: Principal | None = Depends(optional_principal),
):
    model = model_service.get(session, caller, model_id)
    entries = challenges.model_entries(session, model.id, state.clock())
    return model_service.to_out(model).model_copy(update={"challenges": entries})


@router.get("/models/{model_id}/weights", response_class=Response, responses={
    200: {"content": {SAFETENSORS_MEDIA_TYPE: {}}, "description": "the released weights"}})
@optional
def get_weights(
    model_id: Id,
    session: Session = Depends(db),
    state: HubState = Depends(hub_state),
    caller: Principal | None = Depends(optional_principal),
) -> Response:
    model = model_service.downloadable(session, caller, model_id)
    if caller is not None and caller.org_id is not None:
        credits.charge_model_download(session, caller.org_id, model)
        session.commit()
    return Response(state.blobs.get(model.params_sha256), media_type=SAFETENSORS_MEDIA_TYPE)


@router.get("/models/{model_id}/files/{name}", response_class=Response, responses={
    200: {"content": {"*/*": {}}, "description": "the file, with the media type its card gives"}})
@optional
def get_file(
    model_id: Id,
    name: Annotated[str, Path(max_length=200)],
    session: Session = Depends(db),
    state: HubState = Depends(hub_state),
    caller: Principal | None = Depends(optional_principal),
) -> Response:
    """A file released with the model (listed in its card's ``files``), e.g. a GAN's ``samples.png``."""
    entry = model_service.file_entry(model_service.downloadable(session, caller, model_id), name)
    return Response(state.blobs.get(entry["sha256"]), media_type=entry["media_type"])


@router.get("/models/{model_id}/card.md", response_class=Response, responses={
    200: {"content": {"text/markdown": {}}, "description": "the model card in Markdown"}})
@optional
def get_card_markdown(
    model_id: Id, session: Session = Depends(db), state: HubState = Depends(hub_state),
    caller: Principal | None = Depends(optional_principal),
):
    model = model_service.get(session, caller, model_id)
    section = challenges.card_section(challenges.model_entries(session, model.id, state.clock()))
    return Response(model.card_markdown + section, media_type="text/markdown")
