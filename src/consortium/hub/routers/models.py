"""Models (weights + card): who sees the card and who downloads the weights and files follows
:mod:`consortium.hub.services.model_access`; anonymous callers reach released public models."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response
from sqlalchemy.orm import Session

from consortium.hub.deps import db, hub_state, optional_principal
from consortium.hub.gate import optional
from consortium.hub.state import HubState
from consortium.hub.services import models as model_service
from consortium.hub.services.identity import Principal
from consortium.hub.wire import Id, StrictJSONRoute
from consortium.protocol import SAFETENSORS_MEDIA_TYPE, ModelOut

router = APIRouter(prefix="/api", tags=["models"], route_class=StrictJSONRoute)


@router.get("/models/{model_id}", response_model=ModelOut)
@optional
def get_model(
    model_id: Id, session: Session = Depends(db), caller: Principal | None = Depends(optional_principal),
):
    model = model_service.get(session, caller, model_id)
    return ModelOut(id=model.id, run_id=model.run_id, project=model.project.name,
                    params_sha256=model.params_sha256, license=model.license, card=model.card,
                    created_at=model.created_at)


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
    model_id: Id, session: Session = Depends(db), caller: Principal | None = Depends(optional_principal),
):
    return Response(model_service.get(session, caller, model_id).card_markdown, media_type="text/markdown")
