"""Who may see and download a model: :func:`consortium.governance.permissions.model_rights` over the rights of
the data sources its project trained on, the project's participants and, once released, the release decision
stored on the model.

Before release only the project's participants see and download a model (the admin too: it takes part in
every project). After release the rights are computed when asked, so an owner who narrows a data source's
rights later narrows the models trained on it as well; nothing widens a model beyond its release decision.
A proposer without an org (a researcher) keeps seeing and downloading its project's models.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.governance import permissions
from consortium.governance.permissions import NOBODY, ReleaseDecision, Rights
from consortium.hub.db.models import Dataset, Model, Org, ProjectDataset
from consortium.hub.services.access import grant_of, parties, reader, source_rights
from consortium.hub.services.identity import Principal
from consortium.protocol import Visibility

RELEASED = "released"


@dataclass(frozen=True)
class ModelAccess:
    """A model's rights and who proposed its project (a participant even without an org)."""

    rights: Rights
    proposer: str


def release_decision(model: Model) -> ReleaseDecision | None:
    """What the model's release decided (None while it is only trained); missing columns grant nothing."""
    if model.status != RELEASED:
        return None
    return ReleaseDecision(model.visibility or Visibility.private, grant_of(model.process_grant, NOBODY),
                           grant_of(model.download_grant, NOBODY))


def model_access(session: Session, model: Model) -> ModelAccess:
    """The model's :class:`ModelAccess` from its project's data sources and participants now."""
    sources = session.scalars(
        select(Dataset).join(ProjectDataset, ProjectDataset.dataset_id == Dataset.id)
        .where(ProjectDataset.project_id == model.project_id)
    )
    inputs = [source_rights(source) for source in sources]
    found = parties(session, [model.project_id])[model.project_id]
    names = session.scalars(select(Org.name).where(Org.id.in_(found.org_ids))) if found.org_ids else []
    return ModelAccess(permissions.model_rights(inputs, release_decision(model), names), found.proposer)


def _proposed(actor: Principal | None, found: ModelAccess) -> bool:
    return actor is not None and actor.label == found.proposer


def can_see_model(session: Session, actor: Principal | None, model: Model) -> bool:
    """Whether the caller may see the model's card."""
    found = model_access(session, model)
    return _proposed(actor, found) or permissions.can_see(reader(session, actor), None, found.rights)


def can_download_model(session: Session, actor: Principal | None, model: Model) -> bool:
    """Whether the caller may download the model's weights and files."""
    found = model_access(session, model)
    return _proposed(actor, found) or permissions.can_download(reader(session, actor), None, found.rights)
