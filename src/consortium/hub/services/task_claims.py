"""Handing out tasks from the database: the tasks a run driver's board does not hold (another replica drives
the run, or this process restarted), claimed for many long polls in one statement.

With replicas, the long polls a replica holds for runs that another replica drives are woken together when
a phase opens; :func:`claim_many` serves all of them with two statements (the tasks with what their messages
need, and their claim) instead of four per node.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, select, update
from sqlalchemy.orm import Session

from consortium.hub.db.models import Dataset, Round, Run, Task
from consortium.hub.services.task_messages import ProjectMessages
from consortium.protocol import TaskKind, TaskOut
from consortium.statuses import OPEN_TASK_STATES, RunStatus, TaskStatus

Prebuilt = Callable[[int], TaskOut | None]
Messages = Callable[[Session, int, bool], ProjectMessages]
"""``messages(session, run_id, fitted)``: a run's shared task terms (``fitted``: its preprocessing is)."""


def _claimable(now: datetime) -> tuple[ColumnElement[bool], ...]:
    """What makes a task claimable (with ``Run`` joined): open, before its deadline, of a running run."""
    return Task.status.in_(OPEN_TASK_STATES), Task.deadline > now, Run.status == RunStatus.running


def claim_many(
    session: Session, org_ids: Collection[int], now: datetime,
    prebuilt: Prebuilt | None = None, messages: Messages | None = None,
) -> dict[int, TaskOut]:
    """Each org's oldest open task of a running run (orgs without one are left out), marked claimed: a
    restarted node gets its claimed task again.

    ``prebuilt`` gives the task messages the run driver composed when it opened the round; a task it does
    not know is composed from its row, read in the same query, with ``messages(session, run_id, fitted)``
    (what every task of the run carries: a replica keeps them per run and preprocessing state) or, without
    it, read afresh.
    """
    if not org_ids:
        return {}
    oldest: dict[int, Row[Any]] = {}
    for row in session.execute(
        select(Task.id, Task.org_id, Task.status, Task.kind, Task.run_id, Task.params_sha256, Task.seed,
               Round.number, Dataset.name.label("dataset"), Run.preprocessing.is_not(None).label("fitted"))
        .join(Run, Run.id == Task.run_id).join(Round, Round.id == Task.round_id)
        .join(Dataset, Dataset.id == Task.dataset_id)
        .where(Task.org_id.in_(org_ids), *_claimable(now))
        .order_by(Task.id)
    ):
        oldest.setdefault(row.org_id, row)
    pending = [row.id for row in oldest.values() if row.status == TaskStatus.pending]
    if pending:
        session.execute(update(Task).where(Task.id.in_(pending), Task.status == TaskStatus.pending)
                        .values(status=TaskStatus.claimed, claimed_at=now))
        session.commit()
    common: dict[int, ProjectMessages] = {}

    def of_run(row: Row[Any]) -> ProjectMessages:
        if row.run_id not in common:
            if messages is not None:
                common[row.run_id] = messages(session, row.run_id, bool(row.fitted))
            else:
                run = session.get(Run, row.run_id)
                common[row.run_id] = ProjectMessages.of(session, run.project, preprocessing=run.preprocessing)
        return common[row.run_id]

    claimed: dict[int, TaskOut] = {}
    for org_id, row in oldest.items():
        message = prebuilt(row.id) if prebuilt is not None else None
        claimed[org_id] = message if message is not None else of_run(row).task(
            task_id=row.id, kind=TaskKind(row.kind), run_id=row.run_id, round_number=row.number,
            dataset=row.dataset, params_sha256=row.params_sha256, seed=row.seed)
    return claimed


def has_open_task(session: Session, org_id: int, now: datetime) -> bool:
    """Whether the org has a task of a running run still waiting for its answer (what :func:`claim_many`
    would hand it), without claiming it."""
    return session.execute(
        select(Task.id).join(Run, Run.id == Task.run_id).where(Task.org_id == org_id, *_claimable(now)).limit(1)
    ).first() is not None


def still_open(session: Session, task_ids: Collection[int]) -> set[int]:
    """Which of the tasks still wait for their answer (a replica's board may hold one answered on another)."""
    if not task_ids:
        return set()
    return set(session.scalars(select(Task.id).where(Task.id.in_(task_ids), Task.status.in_(OPEN_TASK_STATES))))
