"""The overview (members online, proposals waiting for the caller's org, active runs, recent ledger events)
and the members page. Each part reads through the same services, with the same principal, as the API: an
anonymous visitor sees the public catalogue and released public models only, as the API shows them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session
from starlette.responses import Response

from consortium.governance.decisions import ProposalStatus, VoteChoice
from consortium.hub.db.models import LedgerEntry, Node, Org, Proposal, Run, Vote
from consortium.hub.deps import db
from consortium.hub.gate import web
from consortium.hub.services import datasets as dataset_service
from consortium.hub.services import environments as environment_service
from consortium.hub.services import models as model_service
from consortium.hub.services import proposals
from consortium.hub.services.access import ledger_reader, parties, takes_part
from consortium.hub.services.identity import Principal
from consortium.hub.web.render import WebRoute, caller, login_redirect, page
from consortium.statuses import RunStatus

router = APIRouter(route_class=WebRoute, include_in_schema=False)
RECENT_EVENTS = 15


@dataclass(frozen=True)
class MemberRow:
    name: str
    display_name: str
    status: str
    nodes: list[str]
    last_seen: str
    online: bool


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def member_rows(session: Session, presence: dict[int, float],
                online_within_s: float = 60.0) -> list[MemberRow]:
    """Every org with its nodes and when the hub last heard from it (this hub process's memory first, then
    the nodes' stored ``last_seen``)."""
    nodes: dict[int, list[Node]] = {}
    for node in session.scalars(select(Node).order_by(Node.id)):
        nodes.setdefault(node.org_id, []).append(node)
    now = time.monotonic()
    rows = []
    for org in session.scalars(select(Org).order_by(Org.id)):
        seen = presence.get(org.id)
        stored = [n.last_seen for n in nodes.get(org.id, []) if n.last_seen is not None]
        if seen is not None:
            last, online = _ago(now - seen), now - seen < online_within_s
        elif stored:
            last, online = _stamp(max(stored)), False
        else:
            last, online = "never", False
        rows.append(MemberRow(org.name, org.display_name, org.status, [n.name for n in nodes.get(org.id, [])],
                              last, online))
    return rows


def _stamp(when: datetime | str) -> str:
    """A time to the minute; the ledger keeps its times as ISO 8601 text."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def waiting_for(session: Session, who: Principal) -> list[Row]:
    """The open proposals still missing a vote of the caller's org: those that need its approval and do not
    have its yes yet (the ``missing`` of their outcome; one query each for proposals and the org's votes)."""
    if who.org_name is None:
        return []
    approved = set(session.scalars(select(Vote.proposal_id).where(Vote.org_id == who.org_id,
                                                                  Vote.choice == VoteChoice.yes)))
    rows = session.execute(select(Proposal.id, Proposal.kind, Proposal.proposer, Proposal.closes_at,
                                  Proposal.must_approve)
                           .where(Proposal.status == ProposalStatus.open.value).order_by(Proposal.id))
    return [row for row in rows if who.org_name in row.must_approve and row.id not in approved]


def active_runs(session: Session, who: Principal) -> list[tuple[Run, str]]:
    """The running runs of projects the caller takes part in (the parties of those projects only)."""
    runs = list(session.scalars(select(Run).where(Run.status == RunStatus.running).order_by(Run.id)))
    found = parties(session, [run.project_id for run in runs])
    return [(run, run.project.name) for run in runs
            if run.project_id in found and takes_part(who, found[run.project_id])]


def recent_events(session: Session, who: Principal, limit: int = RECENT_EVENTS) -> list[dict]:
    """The newest ledger entries; the payload of one the caller may not read is left out, as the API does."""
    entries = list(session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq.desc()).limit(limit)))
    readable = ledger_reader(session, who, entries)
    return [{"seq": e.seq, "event_type": e.event_type, "actor": e.actor, "at": _stamp(e.created_at),
             "payload": e.payload if readable(e) else None} for e in entries]


@router.get("/")
@web
def overview(request: Request, session: Session = Depends(db)) -> Response:
    who = caller(request)
    counts = {
        "datasets": dataset_service.visible_count(session, who, dataset_service.TABLE),
        "environments": dataset_service.visible_count(session, who, environment_service.KIND),
        "models": len(model_service.listing(session, who, limit=model_service.MAX_PAGE)),
    }
    if who is None:
        return page(request, "overview.html", title="Overview", counts=counts, members=[], waiting=[],
                    runs=[], events=[])
    proposals.settle_due(session)
    session.commit()
    return page(request, "overview.html", title="Overview", counts=counts,
                members=member_rows(session, request.app.state.hub.presence),
                waiting=waiting_for(session, who), runs=active_runs(session, who),
                events=recent_events(session, who))


@router.get("/members")
@web
def members_page(request: Request, session: Session = Depends(db)) -> Response:
    """The members, their nodes and when they were last seen; like ``GET /api/orgs``, for logged-in users."""
    if caller(request) is None:
        return login_redirect(request)
    nodes = session.scalar(select(func.count()).select_from(Node))
    return page(request, "members.html", title="Members",
                members=member_rows(session, request.app.state.hub.presence), node_count=nodes)
