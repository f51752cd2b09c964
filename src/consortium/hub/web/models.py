"""The model registry (the filters of ``GET /api/models``) and each model's page: card fields, the versions
of its project's line, licence and obligations, privacy guarantee, a GAN's sample grid, and the weights and
files for the logged-in browser where :mod:`consortium.hub.services.model_access` allows them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from consortium.hub.deps import db
from consortium.hub.gate import web
from consortium.hub.services import models as model_service
from consortium.hub.services.access import can_see_project
from consortium.hub.services.model_access import can_download_model
from consortium.hub.web.lineage import BOX_HEIGHT, BOX_WIDTH, model_lineage
from consortium.hub.web.render import WebRoute, caller, page
from consortium.hub.wire import Id
from consortium.protocol import SAFETENSORS_MEDIA_TYPE
from consortium.statuses import ModelStatus

router = APIRouter(route_class=WebRoute, include_in_schema=False)
FILTER_CHARS = 200
STATUSES = tuple(s.value for s in ModelStatus)


def _clip(value: str | None) -> str:
    return (value or "").strip()[:FILTER_CHARS]


def plain(value: Any) -> str:
    """A card value as one line of text (lists joined, mappings as key: value, numbers to 4 digits)."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {plain(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(plain(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def obligation_lines(obligations: dict[str, Any]) -> dict[str, list[str]]:
    """The card's obligations that apply, each as one line per source that imposes it."""
    lines: dict[str, list[str]] = {}
    for name, terms in obligations.items():
        if not terms:
            continue
        items = terms if isinstance(terms, list) else [terms]
        lines[name.replace("_", " ")] = [
            f"{t.get('source', '')} ({t.get('licence', '')}): {t.get('clause', '')}".strip(": ")
            if isinstance(t, dict) else plain(t) for t in items]
    return lines


@router.get("/models")
@web
def registry(request: Request, project: str | None = None, status: str | None = None,
             licence: str | None = None, org: str | None = None, session: Session = Depends(db)) -> Response:
    """The models the caller may see, filtered as ``GET /api/models`` filters them (an unknown status
    filters nothing out rather than failing the page)."""
    filters = {"project": _clip(project), "status": _clip(status), "licence": _clip(licence),
               "org": _clip(org)}
    rows = model_service.listing(
        session, caller(request), project=filters["project"] or None,
        status=filters["status"] if filters["status"] in STATUSES else None,
        licence=filters["licence"] or None, org=filters["org"] or None, limit=model_service.MAX_PAGE)
    return page(request, "models.html", title="Models", models=rows, filters=filters, statuses=STATUSES)


@router.get("/models/{model_id}")
@web
def model_page(request: Request, model_id: Id, session: Session = Depends(db)) -> Response:
    who = caller(request)
    model = model_service.get(session, who, model_id)
    card = model.card
    line = model_service.listing(session, who, project_id=model.project_id, limit=model_service.MAX_PAGE)
    files = card.get("files", [])
    return page(
        request, "model.html", title=f"Model {model.id}", model=model, card=card, versions=line,
        obligations=obligation_lines(card.get("obligations") or {}),
        privacy=card.get("privacy"), may_download=can_download_model(session, who, model),
        images=[f for f in files if str(f.get("media_type", "")).startswith("image/")], files=files,
        sees_project=who is not None and can_see_project(session, who, model.project), plain=plain,
        lineage=model_lineage(session, who, model, line), box_width=BOX_WIDTH, box_height=BOX_HEIGHT,
        contributions=card.get("contributions"),
    )


@router.get("/models/{model_id}/weights")
@web
def weights(request: Request, model_id: Id, session: Session = Depends(db)) -> Response:
    """The weights, for a caller who may download them (like ``GET /api/models/{id}/weights``)."""
    model = model_service.downloadable(session, caller(request), model_id)
    return Response(request.app.state.hub.blobs.get(model.params_sha256), media_type=SAFETENSORS_MEDIA_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="model-{model.id}.safetensors"'})


@router.get("/models/{model_id}/files/{name}")
@web
def model_file(request: Request, model_id: Id, name: str, session: Session = Depends(db)) -> Response:
    """A file released with the model (a GAN's sample grid), for a caller who may download the model."""
    model = model_service.downloadable(session, caller(request), model_id)
    entry = model_service.file_entry(model, name[:200])
    return Response(request.app.state.hub.blobs.get(entry["sha256"]), media_type=entry["media_type"],
                    headers={"X-Content-Type-Options": "nosniff"})
