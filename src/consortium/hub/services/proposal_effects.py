"""What a passed proposal does, written in the transaction that settles it.

Each effect re-checks that its subject is still the one voted on (a project version, an org's state): a
passed proposal about something that has changed since does nothing but say so in the ledger.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.governance.decisions import ProposalStatus
from consortium.governance.policy import ConsortiumPolicy, ProposalKind
from consortium.hub.db.models import Dataset, Model, Org, Project, ProjectDataset, Proposal
from consortium.hub.services import credits, ledger, policy as policies, run_store
from consortium.hub.services.model_cards import card_sha256, released, render_markdown
from consortium.hub.services.proposal_records import close_as_withdrawn
from consortium.statuses import ModelStatus

ADMITTED = "admitted"
SUSPENDED = "suspended"
PROPOSED = "proposed"


def _skip(session: Session, row: Proposal, why: str) -> None:
    ledger.record(session, "proposal.not_applied", "hub", {"proposal_id": row.id, "reason": why},
                  scope=ledger.project_scope(row.project_id) if row.project_id is not None else ledger.MEMBERS)


def _run_project(session: Session, row: Proposal) -> None:
    project = session.get(Project, row.project_id)
    if project is None or project.spec_hash != row.subject["spec_hash"] \
            or project.test_set_sha256 != row.subject["test_set_sha256"]:
        _skip(session, row, "the project changed since this proposal opened")
        return
    project.status = "approved"


def _org(session: Session, row: Proposal) -> Org | None:
    return session.get(Org, row.org_id) if row.org_id is not None else None


def _set_org_status(session: Session, row: Proposal, expected: str, status: str, event: str) -> None:
    org = _org(session, row)
    if org is None or org.status != expected:
        _skip(session, row, f"the org is no longer {expected}")
        return
    org.status = status
    ledger.record(session, event, "hub", {"org": org.name, "proposal_id": row.id}, scope=ledger.MEMBERS)
    if status == SUSPENDED:
        why = f"{org.name} was suspended (proposal {row.id})"
        drop_from_open_projects(session, org, why)
        run_store.cut_org_tasks(session, org.id, org.name, why, row.decided_at)


def drop_from_open_projects(session: Session, org: Org, reason: str) -> None:
    """Withdraw the open ``run_project`` proposals that use the org's data, naming why: a suspended org's
    data leaves every project that has not been decided yet."""
    uses = select(ProjectDataset.project_id).join(Dataset, Dataset.id == ProjectDataset.dataset_id) \
        .where(Dataset.org_id == org.id)
    for row in session.scalars(select(Proposal).where(
            Proposal.kind == ProposalKind.run_project.value, Proposal.status == ProposalStatus.open.value,
            Proposal.project_id.in_(uses))):
        close_as_withdrawn(session, row, "hub", f"{reason}: its data can no longer be used")


def _change_policy(session: Session, row: Proposal) -> None:
    current_version, _ = policies.current(session)
    if row.subject.get("base_version") != current_version:
        _skip(session, row, f"the policy changed since (version {current_version} is in force)")
        return
    policies.adopt(session, ConsortiumPolicy.model_validate(row.subject["policy"]), row.id)


def _release_model(session: Session, row: Proposal) -> None:
    """Release the model as voted on: its status, licence and rights set, its card frozen with a release
    section; nothing when the model changed or was released since the proposal opened."""
    model = session.get(Model, row.model_id) if row.model_id is not None else None
    subject = row.subject
    if model is None or model.status != ModelStatus.trained \
            or model.params_sha256 != subject["params_sha256"] or card_sha256(model.card) != subject["card_sha256"]:
        _skip(session, row, "the model changed or was released since this proposal opened")
        return
    at = row.decided_at
    release = {"proposal_id": row.id, "licence": subject["licence"], "commercial": subject["commercial"],
               "visibility": subject["visibility"],
               "rights": {"process": subject["process"], "download": subject["download"]},
               "released_at": at.isoformat()}
    model.card = released(model.card, release)
    model.card_markdown = render_markdown(model.card)
    model.status, model.release_proposal_id, model.released_at = ModelStatus.released, row.id, at
    model.license, model.visibility = subject["licence"], subject["visibility"]
    model.process_grant, model.download_grant = subject["process"], subject["download"]
    ledger.record(session, "model.released", "hub",
                  {"model_id": model.id, **release, "card_sha256": card_sha256(model.card)},
                  scope=ledger.project_scope(model.project_id))
    credits.award_release(session, model)


def apply(session: Session, row: Proposal) -> None:
    """Carry out a passed proposal."""
    kind = ProposalKind(row.kind)
    if kind == ProposalKind.run_project:
        _run_project(session, row)
    elif kind == ProposalKind.admit_org:
        _set_org_status(session, row, PROPOSED, ADMITTED, "org.admitted")
    elif kind == ProposalKind.suspend_org:
        _set_org_status(session, row, ADMITTED, SUSPENDED, "org.suspended")
    elif kind == ProposalKind.reinstate_org:
        _set_org_status(session, row, SUSPENDED, ADMITTED, "org.reinstated")
    elif kind == ProposalKind.change_policy:
        _change_policy(session, row)
    elif kind == ProposalKind.release_model:
        _release_model(session, row)
    else:
        raise RuntimeError(f"no effect is defined for {kind.value} proposals")
