"""Membership by decision: an org is proposed, and admitted, suspended or reinstated only by a passed
proposal (:mod:`consortium.hub.services.proposals`). Nobody, the admin included, changes an org's state
directly.

An org's state: ``proposed`` (it may enrol its key, but its requests are refused), ``admitted`` (a member:
it votes, trains, reads members' cards), ``suspended`` (its requests are refused, its nodes get no tasks, its
data leaves every project not yet decided).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.governance.policy import ProposalKind
from consortium.hub.db.models import Org, Proposal
from consortium.hub.services import ledger, proposals
from consortium.hub.services.access import is_admin
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden
from consortium.hub.services.identity import Principal, org_by_name
from consortium.protocol import OrgCreate

PROPOSED, ADMITTED, SUSPENDED = "proposed", "admitted", "suspended"


def may_propose(actor: Principal) -> bool:
    """The admin, and any member org's key or steward, may put a membership question to the members."""
    return is_admin(actor) or (actor.org_id is not None and actor.acts_for(actor.org_id))


def create_org(session: Session, actor: Principal, body: OrgCreate, now: datetime | None = None) -> Org:
    """Propose a new org: it is recorded as ``proposed`` and an ``admit_org`` proposal opens (which the
    policy may pass at once, as for the consortium's first org)."""
    if not may_propose(actor):
        raise Forbidden("only the admin or a member organisation can propose a new organisation")
    ledger.lock(session)
    if session.scalar(select(Org).where(Org.name == body.name)) is not None:
        raise Conflict(f"organisation {body.name!r} already exists")
    org = Org(name=body.name, display_name=body.display_name or body.name, status=PROPOSED)
    session.add(org)
    session.flush()
    ledger.record(session, "org.proposed", actor.label, {"org": org.name, "display_name": org.display_name},
                  scope=ledger.MEMBERS)
    proposals.open_proposal(session, actor.label, ProposalKind.admit_org, {"org": org.name}, org_id=org.id,
                            now=now)
    session.commit()
    return org


def propose_status_change(session: Session, actor: Principal, kind: ProposalKind, org_name: str,
                          reason: str, now: datetime | None = None) -> Proposal:
    """Open a ``suspend_org`` or ``reinstate_org`` proposal about ``org_name``."""
    if not may_propose(actor):
        raise Forbidden("only the admin or a member organisation can propose to suspend or reinstate an org")
    ledger.lock(session)
    org = org_by_name(session, org_name)
    expected = ADMITTED if kind == ProposalKind.suspend_org else SUSPENDED
    if org.status != expected:
        raise Conflict(f"organisation {org.name!r} is {org.status}, not {expected}")
    pending = session.scalar(select(Proposal.id).where(
        Proposal.org_id == org.id, Proposal.kind == kind.value, Proposal.status == "open"))
    if pending is not None:
        raise Conflict(f"proposal {pending} to {kind.value.split('_')[0]} {org.name!r} is already open",
                       proposal_id=pending)
    if not reason.strip():
        raise BadRequest("reason: say why the organisation should be "
                         f"{'suspended' if kind == ProposalKind.suspend_org else 'reinstated'}")
    row = proposals.open_proposal(session, actor.label, kind, {"org": org.name, "reason": reason},
                                  org_id=org.id, now=now)
    session.commit()
    return row
