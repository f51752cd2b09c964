"""A run's rounds in the database, written in the caller's transaction (nothing here commits).

Opening a phase writes the round row (unless the phase joins an existing round, as the final evaluation
does), all its task rows and any ledger entries; closing a round writes its metrics, the previous round's
federated evaluation, the run's checkpoint (params and server-state digests) and the ledger entries. The run
driver opens the next phase in its own short transaction, then commits the round's close
(``scheduler.RunDriver._open_next``).

The statements are Core statements on the tables, not ORM units of work: they run once per round on the hub's
critical path, and the ORM's bookkeeping cost several times the SQL itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, bindparam, func, insert, literal, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from consortium import faults
from consortium.fl.core import finite_metrics
from consortium.hub.db.models import Org, Round, Run, Task, utcnow
from consortium.hub.services import ledger
from consortium.statuses import ANSWERED_TASK_STATES, OPEN_TASK_STATES, RoundStatus, RunStatus, TaskStatus

LedgerEvent = tuple[str, str, dict[str, Any]]
"""``(event_type, actor, payload)`` of one ledger entry to append."""


@dataclass(frozen=True)
class NewTask:
    org_id: int
    dataset_id: int
    seed: int


@dataclass(frozen=True)
class OpenedPhase:
    round_id: int
    task_ids: list[int]


ROUNDS = Round.__table__
TASKS = Task.__table__
RUNS = Run.__table__


def _insert_round(session: Session, run_id: int, number: int, **values: Any) -> int:
    """Insert the next attempt of round ``number`` (attempt = 1 + the latest one's, in the same statement)."""
    columns = {"run_id": literal(run_id), "number": literal(number),
               "attempt": func.coalesce(func.max(ROUNDS.c.attempt), 0) + 1}
    columns.update((name, literal(value, ROUNDS.c[name].type)) for name, value in values.items())
    attempt = select(*(value.label(name) for name, value in columns.items())).where(
        ROUNDS.c.run_id == run_id, ROUNDS.c.number == number
    )
    return session.execute(
        insert(ROUNDS).from_select(list(columns), attempt).returning(ROUNDS.c.id)
    ).scalar_one()


def open_phase(
    session: Session,
    run_id: int,
    number: int,
    kind: str,
    params_sha256: str | None,
    tasks: Sequence[NewTask],
    deadline: datetime,
    *,
    round_id: int | None = None,
    events: Sequence[LedgerEvent] = (),
    scope: ledger.Scope | None = None,
) -> OpenedPhase:
    """Open round ``number`` (a new attempt) with ``tasks``, or add them to round ``round_id``; ``events``
    go to the ledger under ``scope`` (the run's project)."""
    if round_id is None:
        round_id = _insert_round(session, run_id, number)
    common = {"run_id": run_id, "round_id": round_id, "kind": kind, "params_sha256": params_sha256,
              "deadline": deadline}
    task_ids = _insert_tasks(session, common, tasks) if tasks else []
    if events:
        ledger.record_many(session, events, scope=scope)
    faults.point("phase.open")
    return OpenedPhase(round_id, task_ids)


def _insert_tasks(session: Session, common: dict[str, Any], tasks: Sequence[NewTask]) -> list[int]:
    """One task row per ``tasks`` entry (``common`` values and its own); their ids in ``tasks``' order.

    On PostgreSQL the tasks' own values travel as three arrays expanded by ``unnest`` in one short statement:
    the multi-row ``VALUES`` that SQLAlchemy renders otherwise took ~100 ms at 1,000 tasks (11 ms this way),
    all of it between a phase's opening and its first delivery. The rows come back keyed by dataset (one task
    per dataset in a phase), so no insertion order is assumed."""
    datasets = [t.dataset_id for t in tasks]
    if session.get_bind().dialect.name != "postgresql" or len(set(datasets)) != len(datasets):
        return list(session.scalars(
            insert(TASKS).returning(TASKS.c.id, sort_by_parameter_order=True),
            [{**common, "org_id": t.org_id, "dataset_id": t.dataset_id, "seed": t.seed} for t in tasks],
        ))
    own = func.unnest(
        bindparam("org_ids", [t.org_id for t in tasks], type_=ARRAY(Integer)),
        bindparam("dataset_ids", datasets, type_=ARRAY(Integer)),
        bindparam("seeds", [t.seed for t in tasks], type_=ARRAY(BigInteger)),
    ).table_valued("org_id", "dataset_id", "seed").render_derived()
    shared = {"status": TaskStatus.pending.value, "created_at": utcnow(), **common}
    columns = [*shared, "org_id", "dataset_id", "seed"]
    rows = select(*(literal(value, TASKS.c[name].type) for name, value in shared.items()),
                  own.c.org_id, own.c.dataset_id, own.c.seed)
    inserted = session.execute(
        insert(TASKS).from_select(columns, rows, include_defaults=False).returning(TASKS.c.dataset_id, TASKS.c.id)
    ).all()
    ids = {dataset: task_id for dataset, task_id in inserted}
    return [ids[dataset] for dataset in datasets]


@dataclass(frozen=True)
class ClosedRound:
    """A closed round's row id and the metrics written with it."""

    round_id: int
    metrics: dict[str, Any] | None


def federated_eval_event(
    session: Session, run_id: int, number: int, metrics: dict[str, float], num_examples: int,
    eval_compute_s: float, closed: ClosedRound | None = None,
) -> LedgerEvent | None:
    """Store the federated evaluation of closed round ``number`` (uncommitted); return its ledger event.

    ``closed``: that round as the caller closed it (saves reading it back). A NaN or infinite metric is left
    out of both and named in the round's ``diverged`` list (and the event's)."""
    if closed is None:
        row = session.execute(
            select(ROUNDS.c.id, ROUNDS.c.metrics)
            .where(ROUNDS.c.run_id == run_id, ROUNDS.c.number == number, ROUNDS.c.status == RoundStatus.closed)
        ).first()
        if row is None:
            return None
        closed = ClosedRound(row.id, row.metrics)
    if closed.metrics is None:
        return None
    metrics, diverged = finite_metrics(metrics, "federated_eval")
    merged = dict(closed.metrics)
    merged.update(federated_eval=metrics, federated_eval_pending=False, max_eval_compute_s=eval_compute_s)
    payload = {"run_id": run_id, "round": number, "federated_eval": metrics, "num_examples": num_examples}
    if diverged:
        merged["diverged"] = [*merged.get("diverged", []), *diverged]
        payload["diverged"] = diverged
    session.execute(update(ROUNDS).where(ROUNDS.c.id == closed.round_id).values(metrics=merged))
    return ("round.evaluated", "hub", payload)


def close_round(
    session: Session,
    run_id: int,
    number: int,
    round_id: int | None,
    *,
    metrics: dict[str, Any] | None,
    params_sha256: str,
    server_state_sha256: str | None,
    now: datetime,
    events: Sequence[LedgerEvent],
    scope: ledger.Scope,
) -> int:
    """Checkpoint: round closed with its metrics, run advanced to ``params_sha256``, ledger events (under
    ``scope``, the run's project).

    Without ``round_id`` (the initial params, when no init phase ran) a closed round row is created.
    """
    if round_id is None:
        round_id = _insert_round(session, run_id, number, status=RoundStatus.closed, closed_at=now, metrics=metrics)
    else:
        session.execute(
            update(ROUNDS).where(ROUNDS.c.id == round_id).values(status=RoundStatus.closed, closed_at=now, metrics=metrics)
        )
    session.execute(
        update(RUNS).where(RUNS.c.id == run_id)
        .values(current_round=number, params_sha256=params_sha256, server_state_sha256=server_state_sha256)
    )
    ledger.record_many(session, events, scope=scope)
    faults.point("round.close")
    return round_id


def abandon_open_rounds(session: Session, run_id: int, scope: ledger.Scope) -> list[str]:
    """Cancel the run's open tasks and abandon its open rounds (a restarted hub replays them), with ledger
    entries; the digests of the updates answered in those rounds (nothing will read them now)."""
    open_rounds = list(
        session.scalars(select(Round).where(Round.run_id == run_id, Round.status == RoundStatus.open))
    )
    uploads = list(session.scalars(select(Task.update_sha256).where(
        Task.round_id.in_([r.id for r in open_rounds]), Task.update_sha256.is_not(None)))) if open_rounds else []
    for task in session.scalars(select(Task).where(Task.run_id == run_id, Task.status.in_(OPEN_TASK_STATES))):
        task.status = TaskStatus.cancelled
    for rnd in open_rounds:
        rnd.status = RoundStatus.abandoned
        ledger.record(
            session, "round.abandoned", "hub",
            {"run_id": run_id, "round": rnd.number, "attempt": rnd.attempt,
             "reason": "hub restarted; the round is replayed from the last checkpoint"},
            scope=scope,
        )
    return uploads


def spent_uploads(session: Session, run_id: int) -> list[str]:
    """The updates answered for the run's tasks, once none of its rounds is open: each was aggregated into a
    checkpoint or belongs to an abandoned round (a driver killed between a round's checkpoint and deleting its
    uploads leaves them), less any another run's open round was answered with too (same content, same blob)."""
    in_open_rounds = (select(Task.update_sha256).join(Round, Task.round_id == Round.id)
                      .where(Round.status == RoundStatus.open, Task.update_sha256.is_not(None)))
    return list(session.scalars(select(Task.update_sha256).distinct().where(
        Task.run_id == run_id, Task.update_sha256.is_not(None), Task.update_sha256.not_in(in_open_rounds))))


def drop_tasks(
    session: Session, run_id: int, orgs: dict[int, str], handed_out: dict[int, datetime], scope: ledger.Scope
) -> set[int]:
    """Mark those of the tasks ``orgs`` names (task id: its org) still open dropped, with ledger entries and
    when they were ``handed_out``; the ids of those dropped."""
    dropped = set(session.scalars(
        update(Task)
        .where(Task.id.in_(set(orgs)), Task.status.in_(OPEN_TASK_STATES))
        .values(status=TaskStatus.dropped)
        .returning(Task.id)
        .execution_options(synchronize_session=False)
    ))
    ledger.record_many(session, [
        ("task.dropped", "hub", {"run_id": run_id, "task_id": task_id, "org": orgs[task_id],
                                 "reason": "no answer within round_timeout"})
        for task_id in sorted(dropped)
    ], scope=scope)
    for task_id in dropped & handed_out.keys():
        session.execute(
            update(Task).where(Task.id == task_id, Task.claimed_at.is_(None))
            .values(claimed_at=handed_out[task_id]).execution_options(synchronize_session=False)
        )
    return dropped


def fail_run(session: Session, run_id: int, reason: str, now: datetime) -> None:
    """The run failed for ``reason``, its open tasks cancelled, its open rounds abandoned (a failure between
    a round's two transactions leaves two open: nothing will close them now), a ledger entry."""
    run = session.get(Run, run_id)
    run.status, run.error, run.finished_at = RunStatus.failed, reason, now
    session.execute(
        update(ROUNDS).where(ROUNDS.c.run_id == run_id, ROUNDS.c.status == RoundStatus.open)
        .values(status=RoundStatus.abandoned)
    )
    # Guarded by status in the statement itself: an answer committed a moment ago is kept.
    session.execute(
        update(Task).where(Task.run_id == run_id, Task.status.in_(OPEN_TASK_STATES))
        .values(status=TaskStatus.cancelled).execution_options(synchronize_session=False)
    )
    ledger.record(session, "run.failed", "hub", {"run_id": run_id, "reason": reason},
                  scope=ledger.project_scope(run.project_id))


def closed_round_id(session: Session, run_id: int, number: int) -> int:
    """The id of the run's closed round ``number``."""
    return session.scalar(
        select(Round.id).where(Round.run_id == run_id, Round.number == number, Round.status == RoundStatus.closed)
    )


def answered_tasks(session: Session, task_ids: set[int]) -> list[Any]:
    """Id, status, result, update digest and error of those of ``task_ids`` that were answered."""
    return session.execute(
        select(Task.id, Task.status, Task.result, Task.update_sha256, Task.error)
        .where(Task.id.in_(task_ids), Task.status.in_(ANSWERED_TASK_STATES))
    ).all()


def cut_org_tasks(session: Session, org_id: int, org_name: str, reason: str, now: datetime) -> list[int]:
    """Close the org's open tasks in running runs as ``refused`` with ``reason`` (a ``task.cut`` ledger entry
    each, in its project's scope), so that their rounds go on without them instead of waiting for the
    deadline; the ids of the tasks cut."""
    cut = session.execute(
        update(Task)
        .where(Task.org_id == org_id, Task.status.in_(OPEN_TASK_STATES),
               Task.run_id.in_(select(Run.id).where(Run.status == RunStatus.running)))
        .values(status=TaskStatus.refused, error=reason, done_at=now)
        .returning(Task.id, Task.run_id)
        .execution_options(synchronize_session=False)
    ).all()
    projects = dict(session.execute(
        select(Run.id, Run.project_id).where(Run.id.in_({run_id for _, run_id in cut}))).all()) if cut else {}
    for task_id, run_id in sorted(cut):
        ledger.record(session, "task.cut", "hub",
                      {"run_id": run_id, "task_id": task_id, "org": org_name, "reason": reason},
                      scope=ledger.project_scope(projects[run_id]))
    return sorted(task_id for task_id, _ in cut)


def admitted(session: Session, org_ids: set[int]) -> set[int]:
    """Those of ``org_ids`` whose org is admitted (a suspended org's nodes get no new tasks)."""
    return set(session.scalars(select(Org.id).where(Org.id.in_(org_ids), Org.status == "admitted")))


def rounds_trained(session: Session, run_id: int) -> dict[str, int]:
    """Per org name, the rounds of ``run_id`` in which it answered a fit task the hub accepted."""
    rows = session.execute(select(Org.name, func.count(func.distinct(Task.round_id))).join(Task, Task.org_id == Org.id)
                           .where(Task.run_id == run_id, Task.kind == "fit", Task.status == TaskStatus.done)
                           .group_by(Org.name))
    return {name: int(rounds) for name, rounds in rows}
