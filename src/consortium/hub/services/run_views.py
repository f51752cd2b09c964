"""What a run's page shows beyond its progress: each organisation's tasks by status, and the tasks its nodes
refused or the hub rejected, with their reasons. Read with the caller's principal through
:func:`runs.get`, so whoever may not read the run's progress gets the same 404 here."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.hub.db.models import Org, Round, Run, Task
from consortium.statuses import TaskStatus

MAX_REFUSALS = 50
"""The most recent refusals and rejections a run page lists."""


@dataclass(frozen=True)
class NodeStatus:
    """One organisation's tasks in a run, counted by status."""

    org: str
    counts: dict[str, int]


@dataclass(frozen=True)
class Refusal:
    """A task a node refused (its policy said no) or the hub rejected (its answer failed the checks)."""

    org: str
    round: int
    kind: str
    status: str
    reason: str


def node_statuses(session: Session, run: Run) -> list[NodeStatus]:
    """Every organisation with a task in ``run``, its tasks counted by status (one grouped query)."""
    rows = session.execute(
        select(Org.name, Task.status, func.count())
        .join(Org, Org.id == Task.org_id)
        .where(Task.run_id == run.id)
        .group_by(Org.name, Task.status)
        .order_by(Org.name)
    )
    counts: dict[str, dict[str, int]] = {}
    for org, status, count in rows:
        counts.setdefault(org, {})[status] = count
    return [NodeStatus(org, dict(sorted(found.items()))) for org, found in counts.items()]


def refusals(session: Session, run: Run, limit: int = MAX_REFUSALS) -> list[Refusal]:
    """The newest refused and rejected tasks of ``run``, newest first."""
    rows = session.execute(
        select(Org.name, Round.number, Task.kind, Task.status, Task.error)
        .join(Org, Org.id == Task.org_id)
        .join(Round, Round.id == Task.round_id)
        .where(Task.run_id == run.id, Task.status.in_((TaskStatus.refused, TaskStatus.rejected)))
        .order_by(Task.id.desc())
        .limit(limit)
    )
    return [Refusal(org, number, kind, status, error or "no reason given")
            for org, number, kind, status, error in rows]


def nodes_json(session: Session, run: Run) -> dict:
    """The run's node statuses and refusals as JSON-ready dicts (the run page's live ``nodes`` event)."""
    return {"nodes": [asdict(n) for n in node_statuses(session, run)],
            "refusals": [asdict(r) for r in refusals(session, run)]}
