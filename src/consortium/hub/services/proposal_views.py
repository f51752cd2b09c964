"""Proposals as the API shows them, and proposals opened directly by a request (suspend, reinstate, change
the policy, release a model)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from consortium.governance import statements
from consortium.governance.policy import ProposalKind
from consortium.governance.wire import PolicyOut, ProposalCreate, ProposalOut, VoteOut
from consortium.hub.db.models import PolicyVersion, Proposal
from consortium.hub.services import hub_identity, members, model_release, policy as policies, proposals
from consortium.hub.services.errors import BadRequest, Forbidden
from consortium.hub.services.identity import Principal


def to_out(session: Session, row: Proposal, now: datetime | None = None) -> ProposalOut:
    result = proposals.outcome(session, row, now or datetime.now(UTC))
    votes = proposals.votes_of(session, row)
    voters = proposals.voters(row)
    return ProposalOut(
        id=row.id, kind=ProposalKind(row.kind), subject=row.subject,
        content=statements.proposal_content(hub_identity.hub_id(session), row.kind, row.subject),
        content_hash=row.content_hash, proposer=row.proposer, status=row.status,
        reason=row.reason or result.reason, policy_version=row.policy_version, electorate=row.electorate,
        veto_holders=row.veto_holders, must_approve=row.must_approve, advisory=row.advisory, opened_at=row.opened_at, closes_at=row.closes_at,
        decided_at=row.decided_at,
        votes=[VoteOut(org=v.org.name, choice=v.choice, reason=v.reason, cast_at=v.cast_at,
                       signature=v.signature, counted=v.org.name in voters) for v in votes],
        missing=list(result.missing) if row.status == "open" else [],
        outcome=row.outcome, outcome_signature=row.outcome_signature,
    )


def create(session: Session, actor: Principal, body: ProposalCreate) -> Proposal:
    """Open a proposal of a kind that is not opened with its subject (400 for the others)."""
    if body.kind in (ProposalKind.suspend_org, ProposalKind.reinstate_org):
        if body.org is None:
            raise BadRequest(f"org: a {body.kind.value} proposal names the organisation")
        return members.propose_status_change(session, actor, body.kind, body.org, body.reason)
    if body.kind == ProposalKind.change_policy:
        if body.policy is None:
            raise BadRequest("policy: a change_policy proposal carries the whole new policy")
        if not members.may_propose(actor):
            raise Forbidden("only the admin or a member organisation can propose a policy change")
        version, _ = policies.current(session)
        row = proposals.open_proposal(
            session, actor.label, ProposalKind.change_policy,
            {"base_version": version, "policy": body.policy.model_dump(mode="json"),
             "content_hash": body.policy.content_hash(), "reason": body.reason})
        session.commit()
        return row
    if body.kind == ProposalKind.release_model:
        return model_release.propose(session, actor, body)
    raise BadRequest(f"kind: {body.kind.value} proposals open with their subject "
                     "(run_project: POST /api/projects; admit_org: POST /api/orgs)")


def policy_out(session: Session) -> PolicyOut:
    version, policy = policies.current(session)
    row = session.get(PolicyVersion, version)
    return PolicyOut(version=version, content_hash=row.content_hash, policy=policy, proposal_id=row.proposal_id)
