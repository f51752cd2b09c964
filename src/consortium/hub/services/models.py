"""Trained models: one per finished run, a version of its project's line, with its card; the registry that
lists them; who may see them. Releasing one is a ``release_model`` proposal
(:mod:`consortium.hub.services.model_release`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.governance.licences import LicenceError, normalise
from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import Model, Project, Round, Run
from consortium.hub.services.model_access import can_download_model, can_see_model
from consortium.hub.services.errors import NotFound
from consortium.hub.services.identity import Principal
from consortium.hub.services.model_cards import build_card, render_markdown, source_entries, store_files
from consortium.hub.services.projects import project_datasets
from consortium.hub.tensor_cache import TensorCache
from consortium.protocol import ModelOut, ProjectCreate, RoundMetrics
from consortium.statuses import ModelStatus, RoundStatus

MAX_PAGE = 500


def record_run_model(
    session: Session,
    run: Run,
    *,
    project_name: str,
    spec: ProjectCreate,
    spec_hash: str,
    algorithm: Any,
    hp: Any,
    blobs: BlobStore,
    cache: TensorCache,
    code_version: str,
    now: datetime,
    contributions: dict[str, Any] | None = None,
) -> Model:
    """The Model row of a finished ``run``, the next version of its project's line, with its card over the
    run's closed rounds (added and flushed, not committed)."""
    rounds = [
        RoundMetrics.model_validate(r.metrics)
        for r in session.scalars(
            select(Round).where(Round.run_id == run.id, Round.status == RoundStatus.closed, Round.number > 0)
            .order_by(Round.number)
        )
    ]
    earlier = session.scalar(select(func.count()).select_from(Model).where(Model.project_id == run.project_id))
    version = 1 + earlier
    card = build_card(
        project_id=run.project_id,
        project_name=project_name,
        spec=spec,
        spec_hash=spec_hash,
        run_id=run.id,
        version=version,
        datasets=source_entries(project_datasets(session, run.project)),
        rounds=rounds,
        params_sha256=run.params_sha256,
        code_version=code_version,
        created_at=now,
        files=store_files(blobs, algorithm, hp, cache.get(run.params_sha256), spec.seed),
        contributions=contributions,
        fitted_preprocessing=run.preprocessing,
    )
    model = Model(
        run_id=run.id,
        project_id=run.project_id,
        params_sha256=run.params_sha256,
        license=card["license"],
        card=card,
        card_markdown=render_markdown(card),
        version=version,
        status=ModelStatus.trained,
    )
    session.add(model)
    session.flush()
    return model


def visible(session: Session, actor: Principal | None, model: Model) -> bool:
    """Whether the caller (None: anonymous) may see ``model``: the one place that decides it
    (:func:`consortium.hub.services.model_access.can_see_model`)."""
    return can_see_model(session, actor, model)


def get(session: Session, actor: Principal | None, model_id: int) -> Model:
    """The model if the caller may see it (anonymous callers: None); NotFound otherwise."""
    model = session.get(Model, model_id)
    if model is None or not visible(session, actor, model):
        raise NotFound(f"no model {model_id}")
    return model


def downloadable(session: Session, actor: Principal | None, model_id: int) -> Model:
    """The model if the caller may download its weights and files; NotFound, as for a missing model,
    otherwise (also when the caller sees its card)."""
    model = session.get(Model, model_id)
    if model is None or not can_download_model(session, actor, model):
        raise NotFound(f"no model {model_id}")
    return model


def _licence_matches(model: Model, wanted: str, spelled: str | None) -> bool:
    if wanted.lower() in model.license.lower():
        return True
    try:
        return spelled is not None and normalise(model.license) == spelled
    except LicenceError:
        return False


def listing(
    session: Session, actor: Principal | None, *, project: str | None = None, project_id: int | None = None,
    status: str | None = None, licence: str | None = None, org: str | None = None,
    limit: int = 100, offset: int = 0,
) -> list[Model]:
    """The models the caller may see, oldest first, filtered: by project (name or id), status, licence (a
    case-insensitive part of the model's licence, or the same expression however spelled) and
    participating org; then ``offset`` skipped and at most ``limit`` (up to :data:`MAX_PAGE`) returned."""
    query = select(Model).order_by(Model.id)
    if project is not None:
        query = query.join(Project, Project.id == Model.project_id).where(Project.name == project)
    if project_id is not None:
        query = query.where(Model.project_id == project_id)
    if status is not None:
        query = query.where(Model.status == status)
    try:
        spelled = normalise(licence) if licence else None
    except LicenceError:
        spelled = None
    found = []
    for model in session.scalars(query):
        if licence and not _licence_matches(model, licence, spelled):
            continue
        if org is not None and org not in model.card.get("participating_orgs", []):
            continue
        if visible(session, actor, model):
            found.append(model)
    return found[offset:offset + min(limit, MAX_PAGE)]


def to_out(model: Model) -> ModelOut:
    return ModelOut(
        id=model.id, run_id=model.run_id, project=model.project.name, params_sha256=model.params_sha256,
        license=model.license, card=model.card, created_at=model.created_at, version=model.version,
        status=model.status, released_at=model.released_at, release_proposal_id=model.release_proposal_id,
        visibility=model.visibility, obligations=model.card.get("obligations", {}),
    )


def file_entry(model: Model, name: str) -> dict[str, Any]:
    """The card's entry of a file released with ``model``; NotFound naming the files it has."""
    files = model.card.get("files", [])
    for entry in files:
        if entry["name"] == name:
            return entry
    known = ", ".join(f["name"] for f in files) or "none"
    raise NotFound(f"model {model.id} has no file {name!r}; its files: {known}")
