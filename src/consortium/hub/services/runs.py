"""Runs and the node-facing task API: start a run, hand out tasks, accept updates and results."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Update, bindparam, func, select, update
from sqlalchemy.orm import Session

from consortium.fl.core import FLError, check_update, get_algorithm, parse_hyperparams
from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import Dataset, Project, Round, Run, Task
from consortium.hub.live import Answer, TaskRow
from consortium.hub.services import ledger
from consortium.hub.services import projects as project_service
from consortium.hub.services.access import can_see_project
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden, Gone, NotFound
from consortium.hub.services.identity import Principal, SignedCall, require_role
from consortium.hub.tensor_cache import TensorCache
from consortium.protocol import (
    ProjectCreate,
    Role,
    RoundMetrics,
    RunOut,
    RunProgress,
    TaskKind,
    TaskOut,
    TaskRefusal,
    TaskResult,
    decode_update,
)

OPEN_TASK_STATES = ("pending", "claimed")
TERMINAL_TASK_STATES = ("done", "refused", "dropped", "cancelled")


def evaluates_previous_round(kind: str, round_number: int) -> bool:
    """Fit tasks from round 2 on first evaluate the params they receive (the previous round's aggregate)."""
    return kind == TaskKind.fit.value and round_number > 1


def start(session: Session, actor: Principal, project_id: int) -> Run:
    """Create a run of an approved project; the scheduler drives it from here."""
    require_role(actor, Role.researcher, Role.steward, Role.admin)
    project = project_service.get(session, actor, project_id)
    if actor.label != project.proposer and actor.role != Role.admin:
        raise Forbidden("only the project's proposer or the consortium admin can start a run")
    verdict = project_service.decision(session, project)
    if not verdict.approved:
        raise Conflict(f"project {project.name!r} cannot run yet: {verdict.reason}")
    active = session.scalar(select(Run).where(Run.project_id == project.id, Run.status == "running"))
    if active is not None:
        raise Conflict(f"project {project.name!r} already has run {active.id} in progress")
    run = Run(project_id=project.id, status="running")
    session.add(run)
    session.flush()
    ledger.record(
        session, "run.started", actor.label,
        {"run_id": run.id, "project_id": project.id, "spec_hash": project.spec_hash},
        scope=ledger.project_scope(project.id),
    )
    session.commit()
    return run


def get(session: Session, actor: Principal, run_id: int) -> Run:
    """The run if the caller takes part in its project; NotFound otherwise."""
    run = session.get(Run, run_id)
    if run is None or not can_see_project(session, actor, run.project):
        raise NotFound(f"no run {run_id}")
    return run


def to_out(session: Session, run: Run) -> RunOut:
    from consortium.hub.db.models import Model

    model = session.scalar(select(Model).where(Model.run_id == run.id))
    spec = ProjectCreate.model_validate(run.project.spec)
    return RunOut(
        id=run.id,
        project_id=run.project_id,
        status=run.status,
        current_round=max(run.current_round, 0),
        rounds=spec.rounds,
        error=run.error,
        model_id=model.id if model else None,
        created_at=run.created_at,
        finished_at=run.finished_at,
    )


def progress(session: Session, run: Run, after_round: int = 0) -> RunProgress:
    rows = session.scalars(
        select(Round)
        .where(Round.run_id == run.id, Round.status == "closed", Round.number > after_round,
               Round.number > 0)
        .order_by(Round.number)
    )
    return RunProgress(
        run=to_out(session, run), rounds=[RoundMetrics.model_validate(r.metrics) for r in rows]
    )


def claim_next(
    session: Session, actor: Principal, now: datetime,
    prebuilt: Callable[[int], TaskOut | None] | None = None,
) -> TaskOut | None:
    """The org's oldest open task, marked claimed (a restarted node gets its claimed task again).

    ``prebuilt`` gives the task messages the run driver composed when it opened the round; a task it does
    not know is composed from the database.
    """
    row = session.execute(
        select(Task.id, Task.status)
        .where(Task.org_id == actor.org_id, Task.status.in_(OPEN_TASK_STATES), Task.deadline > now)
        .order_by(Task.id)
        .limit(1)
    ).first()
    if row is None:
        return None
    if row.status == "pending":
        session.execute(
            update(Task).where(Task.id == row.id, Task.status == "pending").values(status="claimed", claimed_at=now)
        )
        session.commit()
    message = prebuilt(row.id) if prebuilt is not None else None
    if message is not None:
        return message
    task = session.get(Task, row.id)
    run = session.get(Run, task.run_id)
    project: Project = run.project
    round_number = session.get(Round, task.round_id).number
    return TaskOut(
        id=task.id,
        kind=TaskKind(task.kind),
        run_id=task.run_id,
        round=round_number,
        project_id=project.id,
        spec_hash=project.spec_hash,
        spec=ProjectCreate.model_validate(project.spec),
        dataset=task.dataset.name,
        params_sha256=task.params_sha256,
        seed=task.seed,
        evaluate_first=evaluates_previous_round(task.kind, round_number),
    )


TASKS = Task.__table__


_TASK_ROW = select(*(TASKS.c[name] for name in TaskRow._fields)).where(TASKS.c.id == bindparam("task_id"))


def own_task(session: Session, actor: Principal, task_id: int, known: TaskRow | None = None) -> TaskRow:
    """The caller's task ``task_id`` (404 for anyone else's). ``known``: its row from the task board, which
    saves the query; its status may be stale, so writes to the task must be guarded (see :func:`_answer`)."""
    if known is not None and known.id == task_id and known.org_id == actor.org_id:
        return known
    row = session.execute(_TASK_ROW, {"task_id": task_id}).first()
    if row is None or row.org_id != actor.org_id:
        raise NotFound(f"no task {task_id}")
    return TaskRow(*row)


def _open_for_results(task: TaskRow, kinds: tuple[str, ...]) -> None:
    if task.kind not in kinds:
        raise BadRequest(f"task {task.id} is a {task.kind} task; this endpoint takes {'/'.join(kinds)} results")
    _still_open(task.id, task.status)


def _still_open(task_id: int, status: str) -> None:
    if status == "done":
        raise Conflict(f"task {task_id} already has a result")
    if status in ("dropped", "cancelled", "refused"):
        raise Gone(f"task {task_id} was {status}; its round has moved on")


@functools.cache
def _answer_statement(columns: tuple[str, ...], with_hand_out: bool) -> Update:
    """``UPDATE tasks SET <columns> WHERE id = :task_id AND <still open>``, built once per column set."""
    values: dict[str, Any] = {name: bindparam(name, type_=TASKS.c[name].type) for name in columns}
    if with_hand_out:
        values["claimed_at"] = func.coalesce(
            TASKS.c.claimed_at, bindparam("handed_out_at", type_=TASKS.c.claimed_at.type)
        )
    return (update(TASKS).where(TASKS.c.id == bindparam("task_id"), TASKS.c.status.in_(OPEN_TASK_STATES))
            .values(values))


def _answer(
    session: Session, task: TaskRow, signed: SignedCall | None, handed_out_at: datetime | None, **values: Any
) -> None:
    """Write a task's answer only while it is still open: the driver may have dropped it meanwhile.

    ``signed``: the request's nonce goes into the same transaction; ``handed_out_at``: when the long poll
    handed the task out without writing that down (see :class:`consortium.hub.live.TaskBoard`).
    """
    if signed is not None:
        signed.record_nonce(session)
    statement = _answer_statement(tuple(sorted(values)), handed_out_at is not None)
    written = session.execute(statement, {**values, "task_id": task.id, "handed_out_at": handed_out_at}).rowcount
    if not written:
        session.rollback()
        _still_open(task.id, session.scalar(select(TASKS.c.status).where(TASKS.c.id == task.id)))
        raise Conflict(f"task {task.id} changed state while its answer was stored")


def submit_update(
    session: Session,
    blobs: BlobStore,
    cache: TensorCache,
    actor: Principal,
    task_id: int,
    payload: bytes,
    now: datetime,
    run_algorithm: Callable[[int], tuple[Any, Any] | None] | None = None,
    signed: SignedCall | None = None,
    handed_out_at: datetime | None = None,
    known: TaskRow | None = None,
) -> tuple[TaskRow, Answer]:
    """Validate an uploaded update against the model (names, shapes, dtypes, finite) and store it.

    ``run_algorithm`` may supply a run's (algorithm, hyper-parameters) from memory. Returns the task and its
    committed answer, validated tensors included, for the run driver.
    """
    task = own_task(session, actor, task_id, known)
    _open_for_results(task, (TaskKind.fit.value, TaskKind.init.value))
    try:
        tensors, meta = decode_update(payload)
    except ValueError as exc:
        raise BadRequest(f"update rejected: {exc}") from exc
    known = run_algorithm(task.run_id) if run_algorithm is not None else None
    if known is not None:
        algorithm, hp = known
    else:
        spec = ProjectCreate.model_validate(session.get(Run, task.run_id).project.spec)
        algorithm = get_algorithm(spec.algorithm.name)
        hp = parse_hyperparams(algorithm, spec.algorithm.hyperparameters)
    try:
        if task.kind == TaskKind.fit.value:
            template = algorithm.update_template(hp, cache.get(task.params_sha256))
        else:
            template = algorithm.client_init_template(
                hp, project_service.num_features(session.get(Dataset, task.dataset_id).schema)
            )
        check_update(template, tensors)
    except FLError as exc:
        raise BadRequest(f"update rejected: {exc}") from exc
    digest = blobs.stage(payload)
    result = meta.model_dump()
    try:
        _answer(session, task, signed, handed_out_at, update_sha256=digest, result=result, status="done",
                done_at=now)
        session.commit()
    except BaseException:
        blobs.discard([digest])
        raise
    return task, Answer(task.id, "done", result, tensors, digest)


def submit_result(
    session: Session, actor: Principal, task_id: int, body: TaskResult, now: datetime,
    signed: SignedCall | None = None, handed_out_at: datetime | None = None, known: TaskRow | None = None,
) -> tuple[TaskRow, Answer]:
    task = own_task(session, actor, task_id, known)
    _open_for_results(task, (TaskKind.evaluate.value,))
    result = body.model_dump()
    _answer(session, task, signed, handed_out_at, result=result, status="done", done_at=now)
    session.commit()
    return task, Answer(task.id, "done", result)


def refuse(
    session: Session, actor: Principal, task_id: int, body: TaskRefusal, now: datetime,
    signed: SignedCall | None = None, handed_out_at: datetime | None = None, known: TaskRow | None = None,
) -> tuple[TaskRow, Answer]:
    """A node declines a task (its policy said no); the round goes on without it."""
    task = own_task(session, actor, task_id, known)
    _open_for_results(task, tuple(k.value for k in TaskKind))
    _answer(session, task, signed, handed_out_at, status="refused", done_at=now, error=body.reason)
    project_id = session.scalar(select(Run.project_id).where(Run.id == task.run_id))
    ledger.record(
        session, "task.refused", actor.label,
        {"task_id": task.id, "run_id": task.run_id, "reason": body.reason},
        scope=ledger.project_scope(project_id),
    )
    session.commit()
    return task, Answer(task.id, "refused")
