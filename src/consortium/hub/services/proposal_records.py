"""Small writes about a proposal that both the proposal service and the effects of passed proposals make."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from consortium.governance.decisions import ProposalStatus
from consortium.hub.db.models import Proposal
from consortium.hub.services import ledger


def scope_of(row: Proposal) -> ledger.Scope:
    return ledger.project_scope(row.project_id) if row.project_id is not None else ledger.MEMBERS


def close_as_withdrawn(session: Session, row: Proposal, actor: str, reason: str,
                       now: datetime | None = None) -> None:
    """Withdraw an open proposal (by its proposer, or superseded by a new version of its subject)."""
    now = now if now is not None else datetime.now(UTC)
    row.withdrawn_at, row.decided_at = now, now
    row.status, row.reason = ProposalStatus.withdrawn.value, reason
    ledger.record(session, "proposal.withdrawn", actor,
                  {"proposal_id": row.id, "content_hash": row.content_hash, "reason": reason},
                  scope=scope_of(row))
