"""The consortium policy in force, who votes, and who holds a veto.

Policy versions are rows of ``policy_versions``: version 1 is the default written when the hub first starts
(:func:`ensure`), each later one comes from a passed ``change_policy`` proposal. The rules themselves are pure
(:mod:`consortium.governance.policy`); this module reads and writes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.governance.decisions import Proposal as DecisionFacts
from consortium.governance.decisions import open_proposal as open_decision
from consortium.governance.policy import DATA_KINDS, SUBJECT_KINDS, ConsortiumPolicy, ProposalKind, default_policy
from consortium.hub.db.models import Dataset, Org, PolicyVersion, ProjectDataset
from consortium.hub.services import ledger

ADMITTED = "admitted"


def ensure(session: Session) -> None:
    """Write the default policy as version 1 when there is none (the caller commits)."""
    if session.scalar(select(func.count()).select_from(PolicyVersion)):
        return
    policy = default_policy()
    session.add(PolicyVersion(version=1, body=policy.model_dump(mode="json"), content_hash=policy.content_hash()))
    ledger.record(session, "policy.adopted", "hub",
                  {"version": 1, "content_hash": policy.content_hash(), "policy": policy.model_dump(mode="json"),
                   "proposal_id": None}, scope=ledger.MEMBERS)


def in_force(session: Session) -> ConsortiumPolicy | None:
    """The newest policy's rules; None on a database the hub never started on (no version 1 yet)."""
    row = session.scalar(select(PolicyVersion).order_by(PolicyVersion.version.desc()).limit(1))
    return None if row is None else ConsortiumPolicy.model_validate(row.body)


def current(session: Session) -> tuple[int, ConsortiumPolicy]:
    """The newest policy version and its rules."""
    row = session.scalar(select(PolicyVersion).order_by(PolicyVersion.version.desc()).limit(1))
    if row is None:
        raise RuntimeError("no consortium policy: policy.ensure runs when the hub starts")
    return row.version, ConsortiumPolicy.model_validate(row.body)


def at_version(session: Session, version: int) -> ConsortiumPolicy:
    """The rules of one policy version (a proposal is decided under the version it opened with)."""
    row = session.get(PolicyVersion, version)
    if row is None:
        raise RuntimeError(f"policy version {version} is missing")
    return ConsortiumPolicy.model_validate(row.body)


def adopt(session: Session, policy: ConsortiumPolicy, proposal_id: int) -> int:
    """Make ``policy`` the next version (from a passed proposal); its version number."""
    version = current(session)[0] + 1
    session.add(PolicyVersion(version=version, body=policy.model_dump(mode="json"),
                              content_hash=policy.content_hash(), proposal_id=proposal_id))
    ledger.record(session, "policy.adopted", "hub",
                  {"version": version, "content_hash": policy.content_hash(),
                   "policy": policy.model_dump(mode="json"), "proposal_id": proposal_id}, scope=ledger.MEMBERS)
    return version


def admitted_orgs(session: Session) -> list[str]:
    """The names of the orgs that may vote now."""
    return list(session.scalars(select(Org.name).where(Org.status == ADMITTED).order_by(Org.name)))


def project_owners(session: Session, project_id: int) -> list[str]:
    """The orgs owning a dataset or environment of the project: a ``run_project`` proposal's veto holders."""
    return sorted(set(session.scalars(
        select(Org.name).join(Dataset, Dataset.org_id == Org.id)
        .join(ProjectDataset, ProjectDataset.dataset_id == Dataset.id)
        .where(ProjectDataset.project_id == project_id)
    )))


def new_proposal_facts(
    session: Session, kind: ProposalKind, subject: dict[str, Any], now: datetime
) -> tuple[int, DecisionFacts]:
    """The policy version in force and the facts of a proposal opening now: its rule, its electorate (the
    admitted orgs, less the org it is about), its veto holders and required approvers (a data kind's data
    owners, or the subject org, as the rule says)."""
    version, policy = current(session)
    owners: list[str] = []
    if kind in DATA_KINDS and subject.get("project_id") is not None:
        owners = project_owners(session, subject["project_id"])
    about = subject.get("org") if kind in SUBJECT_KINDS else None
    return version, open_decision(policy, kind, now, admitted_orgs(session), data_owners=owners, subject=about)
