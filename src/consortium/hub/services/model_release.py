"""Release proposals: a model leaves its project's participants only by a passed ``release_model``
proposal, which binds the model as it is (its weights and card hashes), the licence it goes out under, for
commercial use or not, and who may see, process and download it. Its effect is
:func:`consortium.hub.services.proposal_effects.apply`; after it the card, licence and rights never change.

Who decides is the policy's ``release_model`` rule (by default every member votes and the model's data
owners hold a veto): the proposal's data owners are those of the model's project.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.governance.decisions import ProposalStatus
from consortium.governance.permissions import EVERYONE, MEMBERS, NOBODY, Grant
from consortium.governance.policy import ProposalKind
from consortium.governance.wire import ProposalCreate
from consortium.hub.db.models import Model, Proposal
from consortium.hub.services import ledger, licensing, proposals
from consortium.hub.services import models as model_service
from consortium.hub.services.access import is_admin
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden
from consortium.hub.services.identity import Principal
from consortium.hub.services.model_cards import card_sha256
from consortium.hub.services.projects import project_datasets
from consortium.protocol import Visibility
from consortium.statuses import ModelStatus


def _may_propose(actor: Principal, model: Model) -> bool:
    """The admin, a participating org's key or steward, and the project's proposer."""
    org_acts = actor.org_id is not None and actor.acts_for(actor.org_id)
    return is_admin(actor) or org_acts or actor.label == model.project.proposer


def open_release(session: Session, model_id: int | None) -> Proposal | None:
    """The open ``release_model`` proposal of the model, if any."""
    return session.scalar(select(Proposal).where(
        Proposal.kind == ProposalKind.release_model.value, Proposal.model_id == model_id,
        Proposal.status == ProposalStatus.open.value))


def _audience(visibility: Visibility) -> Grant:
    """Who may download a model released with ``download``: whoever sees it (a public model: anyone)."""
    return EVERYONE if visibility == Visibility.public else MEMBERS


def release_subject(model: Model, body: ProposalCreate, licence: str) -> dict[str, Any]:
    """What a vote to release binds: the model as it is, the licence and the rights asked for."""
    download = bool(body.download)
    process = download if body.process is None else body.process
    visibility = body.visibility or Visibility.members
    return {
        "model_id": model.id, "project_id": model.project_id, "project": model.project.name,
        "version": model.version, "params_sha256": model.params_sha256,
        "card_sha256": card_sha256(model.card),
        "licence": licence, "commercial": body.commercial,
        "visibility": visibility.value,
        "process": (MEMBERS if process else NOBODY).dump(),
        "download": (_audience(visibility) if download else NOBODY).dump(),
        "reason": body.reason,
    }


def propose(session: Session, actor: Principal, body: ProposalCreate,
            now: datetime | None = None) -> Proposal:
    """Open a ``release_model`` proposal for a model the caller may see: 422 for a missing or unusable
    licence or a licence the model's data forbids (naming the data sources and clauses), 409 for a model
    released already or with a release proposal open."""
    if body.model_id is None:
        raise BadRequest("model_id: a release_model proposal names the model")
    ledger.lock(session)
    model = model_service.get(session, actor, body.model_id)
    if not _may_propose(actor, model):
        raise Forbidden("only the admin, a participating organisation or the project's proposer can propose "
                        "a release")
    if body.licence is None:
        raise BadRequest("licence: a release_model proposal names the SPDX licence to release under")
    licence = licensing.normalised("licence", body.licence)
    if body.visibility == Visibility.private:
        raise BadRequest("visibility: a release widens who sees the model: members or public")
    if model.status != ModelStatus.trained:
        raise Conflict(f"model {model.id} is {model.status} (proposal {model.release_proposal_id}); "
                       "its card, licence and rights no longer change", proposal_id=model.release_proposal_id)
    pending = open_release(session, model.id)
    if pending is not None:
        raise Conflict(f"proposal {pending.id} to release model {model.id} is already open",
                       proposal_id=pending.id)
    licensing.check_model_release(project_datasets(session, model.project), licence, body.commercial)
    row = proposals.open_proposal(session, actor.label, ProposalKind.release_model,
                                  release_subject(model, body, licence), project_id=model.project_id,
                                  model_id=model.id, now=now)
    session.commit()
    return row
