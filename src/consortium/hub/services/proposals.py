"""Proposals and votes: how the members decide, and the only way anything governed happens.

A proposal opens with the policy in force, the electorate (admitted orgs) and the veto holders fixed; each
org votes once, signed with its key over the proposal's content hash (a later vote replaces its earlier one
while the proposal is open); the outcome is the pure :func:`consortium.governance.decisions.decide` of the
policy, the proposal, the votes and the time. A decided proposal is settled once: its status, the hub's signed
outcome statement and a ledger entry are written in the same transaction as its effect
(:mod:`consortium.hub.services.proposal_effects`). Every proposal, vote and outcome is a ledger entry.

Votes and settlements take the ledger's append lock first, so concurrent votes of one org serialise and
leave one counted vote.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from consortium import crypto
from consortium.governance import statements
from consortium.governance.decisions import Outcome, ProposalStatus, Vote as CastVote, VoteChoice, can_vote, decide
from consortium.governance.decisions import Proposal as ProposalFacts
from consortium.governance.policy import SUBJECT_KINDS, ProposalKind
from consortium.hub.db.models import Org, Project, Proposal, Vote
from consortium.hub.services import hub_identity, hub_key, ledger, proposal_effects, policy as policies
from consortium.hub.services.proposal_records import close_as_withdrawn, scope_of
from consortium.hub.services.access import can_see_project, is_admin
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden, NotFound
from consortium.hub.services.identity import Principal
from consortium.ledger.signatures import ActorSignature

PROJECT_KINDS = (ProposalKind.run_project, ProposalKind.release_model)
"""Kinds about one project: only its participants see them."""


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def open_proposal(
    session: Session, proposer: str, kind: ProposalKind, subject: dict[str, Any], *,
    project_id: int | None = None, org_id: int | None = None, model_id: int | None = None,
    now: datetime | None = None,
) -> Proposal:
    """Open a proposal under the policy in force and settle it at once (a proposal with nobody to ask, such
    as the first org's admission, may pass on opening). The caller commits."""
    now = _now(now)
    version, opened = policies.new_proposal_facts(session, kind, subject, now)
    content = statements.proposal_content(hub_identity.hub_id(session), kind.value, subject)
    row = Proposal(
        kind=kind.value, subject=subject, content_hash=statements.content_hash(content), proposer=proposer,
        status=ProposalStatus.open.value, policy_version=version, electorate=sorted(opened.electorate),
        veto_holders=sorted(opened.veto_holders), must_approve=sorted(opened.must_approve),
        advisory=sorted(opened.advisory), opened_at=now,
        closes_at=opened.closes_at, project_id=project_id, org_id=org_id, model_id=model_id, reason="",
    )
    session.add(row)
    session.flush()
    ledger.record(session, "proposal.opened", proposer,
                  {"proposal_id": row.id, "kind": kind.value, "subject": subject,
                   "content_hash": row.content_hash, "policy_version": version, "electorate": row.electorate,
                   "veto_holders": row.veto_holders, "must_approve": row.must_approve,
                   "advisory": row.advisory,
                   "closes_at": row.closes_at.isoformat()}, scope=scope_of(row))
    settle(session, row, now)
    return row


def facts(session: Session, row: Proposal) -> ProposalFacts:
    """The proposal as the pure decision rules see it (its rule from the policy version it opened under)."""
    kind = ProposalKind(row.kind)
    return ProposalFacts(
        kind=kind, rule=policies.at_version(session, row.policy_version).rule(kind), opened_at=row.opened_at,
        electorate=frozenset(row.electorate), veto_holders=frozenset(row.veto_holders),
        must_approve=frozenset(row.must_approve),
        subject=row.subject.get("org") if kind in SUBJECT_KINDS else None, withdrawn_at=row.withdrawn_at,
        advisory=frozenset(row.advisory),
    )


def cast_votes(session: Session, row: Proposal) -> list[CastVote]:
    """The proposal's votes as the decision rules see them, read as plain rows (a vote on a proposal of a
    thousand voters reads them all: no ORM objects for that)."""
    rows = session.execute(select(Org.name, Vote.choice, Vote.cast_at).join(Org, Org.id == Vote.org_id)
                           .where(Vote.proposal_id == row.id).order_by(Vote.org_id))
    return [CastVote(org=name, choice=VoteChoice(choice), cast_at=cast_at) for name, choice, cast_at in rows]


def votes_of(session: Session, row: Proposal) -> list[Vote]:
    """The proposal's votes with their orgs (one query)."""
    return list(session.scalars(select(Vote).where(Vote.proposal_id == row.id).order_by(Vote.org_id)
                                .options(joinedload(Vote.org))))


def outcome(session: Session, row: Proposal, now: datetime | None = None) -> Outcome:
    """The proposal's outcome by the rules at ``now`` (without writing anything)."""
    return decide(facts(session, row), cast_votes(session, row), _now(now))


def settle(session: Session, row: Proposal, now: datetime | None = None) -> Outcome:
    """Decide an open proposal if the rules now can: write its status, the hub's signed outcome, a ledger
    entry and its effect. A decided proposal is never decided again. The caller commits."""
    result = outcome(session, row, now)
    if row.status != ProposalStatus.open.value or result.status == ProposalStatus.open:
        return result
    row.status, row.reason = result.status.value, result.reason
    row.decided_at = result.decided_at or _now(now)
    counted = {v.org.name: v.choice for v in votes_of(session, row) if v.org.name in voters(row)}
    statement = statements.outcome_statement(
        hub_id=hub_identity.hub_id(session), proposal_id=row.id, content_hash=row.content_hash,
        status=row.status, decided_at=row.decided_at.isoformat(), votes=counted,
    )
    row.outcome = statement
    row.outcome_signature = hub_key.of(session).sign(statements.outcome_message(statement))
    ledger.record(session, "proposal.decided", "hub",
                  {**statement, "reason": row.reason, "signature": row.outcome_signature}, scope=scope_of(row))
    if row.status == ProposalStatus.passed.value:
        proposal_effects.apply(session, row)
    return result


def settle_due(session: Session, now: datetime | None = None) -> int:
    """Settle every open proposal whose window has closed (the hub's sweep); how many were decided."""
    now = _now(now)
    due = list(session.scalars(select(Proposal).where(
        Proposal.status == ProposalStatus.open.value, Proposal.closes_at <= now)))
    for row in due:
        settle(session, row, now)
    return len(due)


def voters(row: Proposal) -> set[str]:
    """Every org that may vote on the proposal: its electorate, veto holders and required approvers."""
    return {*row.electorate, *row.veto_holders, *row.must_approve}


def can_see(session: Session, actor: Principal, row: Proposal) -> bool:
    """Project proposals to the project's participants and to the proposal's voters (who see its subject:
    project name, spec hash, test set hash; the project itself stays the participants'); membership and
    policy proposals to every member."""
    if actor.org_name is not None and actor.org_name in {*voters(row), *row.advisory}:
        return True
    if row.project_id is not None:
        project = session.get(Project, row.project_id)
        return project is not None and can_see_project(session, actor, project)
    return is_admin(actor) or actor.org_id is not None


def visible(session: Session, actor: Principal, proposal_id: int) -> Proposal:
    row = session.get(Proposal, proposal_id)
    if row is None or not can_see(session, actor, row):
        raise NotFound(f"no proposal {proposal_id}")
    return row


def listed(session: Session, actor: Principal, *, status: str | None = None, kind: str | None = None,
           project_id: int | None = None) -> list[Proposal]:
    query = select(Proposal).order_by(Proposal.id)
    if status is not None:
        query = query.where(Proposal.status == status)
    if kind is not None:
        query = query.where(Proposal.kind == kind)
    if project_id is not None:
        query = query.where(Proposal.project_id == project_id)
    return [row for row in session.scalars(query) if can_see(session, actor, row)]


def vote(session: Session, actor: Principal, proposal_id: int, *, choice: str, reason: str,
         content_hash: str, signature: str, now: datetime | None = None) -> Vote:
    """Record (or replace) the caller's org's signed vote; Conflict on a decided, expired or withdrawn
    proposal, Forbidden for an org outside the electorate, BadRequest for a bad signature or hash."""
    now = _now(now)
    ledger.lock(session)
    row = visible(session, actor, proposal_id)
    if actor.org_id is None or not actor.acts_for(actor.org_id):
        raise Forbidden("only an organisation's key or steward can vote")
    settle(session, row, now)
    if row.status != ProposalStatus.open.value:
        session.commit()
        raise Conflict(f"proposal {row.id} is {row.status}: it takes no more votes", status=row.status)
    refusal = can_vote(facts(session, row), cast_votes(session, row), actor.org_name, now)
    if refusal is not None:
        raise Forbidden(refusal)
    if content_hash != row.content_hash:
        raise BadRequest("content_hash: does not match the proposal's content; read the proposal again")
    try:
        statement = statements.vote_statement(
            hub_id=hub_identity.hub_id(session), proposal_id=row.id, content_hash=row.content_hash,
            org=actor.org_name, choice=choice, reason=reason)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    org = session.get(Org, actor.org_id)
    if org.public_key is None or not crypto.verify_signature(org.public_key, statements.vote_message(statement),
                                                             signature):
        raise BadRequest("signature: not a valid signature of this vote statement by the organisation's key")
    cast = session.scalar(select(Vote).where(Vote.proposal_id == row.id, Vote.org_id == actor.org_id))
    if cast is None:
        cast = Vote(proposal_id=row.id, org_id=actor.org_id)
        session.add(cast)
    cast.choice, cast.reason, cast.signature, cast.cast_at = choice, reason, signature, now
    session.flush()
    ledger.record(session, statements.VOTE_EVENT, actor.label, statement, scope=scope_of(row),
                  actor_signature=ActorSignature(org.key_id, signature))
    settle(session, row, now)
    session.commit()
    return cast


def withdraw(session: Session, actor: Principal, proposal_id: int, reason: str = "",
             now: datetime | None = None) -> Proposal:
    """The proposer withdraws an open proposal."""
    ledger.lock(session)
    row = visible(session, actor, proposal_id)
    if actor.label != row.proposer:
        raise Forbidden(f"only the proposer ({row.proposer}) can withdraw proposal {row.id}")
    settle(session, row, now)
    if row.status != ProposalStatus.open.value:
        session.commit()
        raise Conflict(f"proposal {row.id} is {row.status}: it can no longer be withdrawn", status=row.status)
    close_as_withdrawn(session, row, actor.label, reason or "withdrawn by the proposer", now)
    session.commit()
    return row


def project_proposal(session: Session, project: Project) -> Proposal | None:
    """The newest ``run_project`` proposal of the project (None before the hub opened one)."""
    return session.scalar(select(Proposal).where(
        Proposal.project_id == project.id, Proposal.kind == ProposalKind.run_project.value,
    ).order_by(Proposal.id.desc()).limit(1))


def run_project_subject(project: Project) -> dict[str, Any]:
    """What a vote to run a project binds: the project, its spec hash and its test set."""
    return {"project_id": project.id, "project": project.name, "spec_hash": project.spec_hash,
            "test_set_sha256": project.test_set_sha256}


def propose_run(session: Session, project: Project, proposer: str, now: datetime | None = None) -> Proposal:
    """Open the ``run_project`` proposal of the project's current version, withdrawing one of an earlier
    version that is still open."""
    previous = project_proposal(session, project)
    if previous is not None and previous.status == ProposalStatus.open.value:
        close_as_withdrawn(session, previous, "hub", "superseded by a new version of the project", now)
    return open_proposal(session, proposer, ProposalKind.run_project, run_project_subject(project),
                         project_id=project.id, now=now)


def ensure_project_proposals(session: Session) -> None:
    """Open a ``run_project`` proposal for every project that has none (projects from before proposals
    existed: their owners vote again). The caller commits."""
    have = set(session.scalars(select(Proposal.project_id).where(
        Proposal.kind == ProposalKind.run_project.value)))
    for project in session.scalars(select(Project).where(Project.id.not_in(have) if have else True)):
        project.status = "proposed"
        propose_run(session, project, "hub")
