"""Runs and the node-facing task API: start a run, hand out tasks, accept updates and results."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn

from pydantic import ValidationError
from sqlalchemy import Update, bindparam, func, select, update
from sqlalchemy.orm import Session

from consortium import faults
from consortium.fl.baseline import baseline_warning
from consortium.fl.core import FLError
from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import Dataset, Org, Round, Run, Task
from consortium.hub.live import Answer, TaskRow
from consortium.hub.services import ledger
from consortium.hub.services.contributions import run_contributions
from consortium.hub.services import projects as project_service
from consortium.hub.services.access import can_see_project
from consortium.hub.services.answer_rules import AnswerRules, answer_rules, check_answer_update
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden, Gone, NotFound
from consortium.hub.services.identity import Principal, SignedCall, require_role
from consortium.hub.tensor_cache import TensorCache
from consortium.codec import decode_update
from consortium.protocol import (
    ProjectCreate,
    Role,
    RoundMetrics,
    RunOut,
    RunProgress,
    TaskKind,
    TaskRefusal,
    TaskResult,
)
from consortium.statuses import OPEN_TASK_STATES, RoundStatus, RunStatus, TaskStatus


def start(session: Session, actor: Principal, project_id: int) -> Run:
    """Create a run of a project whose current version the members voted to run; the scheduler drives it."""
    require_role(actor, Role.researcher, Role.steward, Role.admin)
    ledger.lock(session)  # the decision checked here stays that of the version the run will use
    project = project_service.get(session, actor, project_id)
    if actor.label != project.proposer and actor.role != Role.admin:
        raise Forbidden("only the project's proposer or the consortium admin can start a run")
    project_service.check_may_run(session, project)
    active = session.scalar(select(Run).where(Run.project_id == project.id, Run.status == RunStatus.running))
    if active is not None:
        raise Conflict(f"project {project.name!r} already has run {active.id} in progress")
    run = Run(project_id=project.id, status=RunStatus.running)
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
        .where(Round.run_id == run.id, Round.status == RoundStatus.closed, Round.number > after_round,
               Round.number > 0)
        .order_by(Round.number)
    )
    rounds = [RoundMetrics.model_validate(r.metrics) for r in rows]
    last = rounds[-1] if rounds else None
    if last is None and after_round > 0:  # the warning is about the newest round, even one seen before
        newest = session.scalar(select(Round.metrics).where(
            Round.run_id == run.id, Round.status == RoundStatus.closed, Round.number > 0
        ).order_by(Round.number.desc()).limit(1))
        last = RoundMetrics.model_validate(newest) if newest is not None else None
    warning = baseline_warning(last.baseline, last.test) if last is not None else None
    return RunProgress(run=to_out(session, run), rounds=rounds, warnings=[warning] if warning else [],
                       refusals=refusals(session, run.id),
                       contributions=contributions_so_far(session, run))


def contributions_so_far(session: Session, run: Run) -> dict[str, float]:
    """Each org's contribution over the run's rounds valued so far (none when the spec asks for no valuation)."""
    if run.project.spec.get("valuation") is None:
        return {}
    return run_contributions(session, run.project_id, run.id)["values"]


def refusals(session: Session, run_id: int) -> list[str]:
    """Every refused or rejected task of the run, as 'round N: org/dataset refused: why', oldest first."""
    rows = session.execute(
        select(Round.number, Org.name, Dataset.name, Task.status, Task.error)
        .join(Round, Round.id == Task.round_id).join(Dataset, Dataset.id == Task.dataset_id)
        .join(Org, Org.id == Task.org_id)
        .where(Task.run_id == run_id, Task.status.in_((TaskStatus.refused, TaskStatus.rejected)))
        .order_by(Task.id)
    )
    return [f"round {number}: {org}/{name} {status}: {error or 'no reason given'}"
            for number, org, name, status, error in rows]


TASKS = Task.__table__


_TASK_ROW = select(*(TASKS.c[name] for name in TaskRow._fields)).where(TASKS.c.id == bindparam("task_id"))


def own_task(
    session: Session, actor: Principal, task_id: int, known: TaskRow | None = None, answer: str | None = None
) -> TaskRow:
    """The caller's task ``task_id`` (404 for anyone else's). ``known``: its row from the task board, which
    saves the query; its status may be stale, so writes to the task must be guarded (see :func:`_answer`).

    ``answer`` (update, result, refusal): the caller tries to answer the task; when the task is another
    org's, a ``security.foreign_task`` ledger entry naming the caller is committed before the 404 (the task
    itself is left untouched).
    """
    if known is not None and known.id == task_id and known.org_id == actor.org_id:
        return known
    row = session.execute(_TASK_ROW, {"task_id": task_id}).first()
    if row is None or row.org_id != actor.org_id:
        if row is not None and answer is not None:
            session.rollback()
            project_id = session.scalar(select(Run.project_id).where(Run.id == row.run_id))
            ledger.record(session, "security.foreign_task", actor.label,
                          {"task_id": task_id, "run_id": row.run_id, "answer": answer,
                           "reason": f"{actor.label} sent a {answer} for a task of another organisation"},
                          scope=ledger.project_scope(project_id))
            session.commit()
        raise NotFound(f"no task {task_id}")
    return TaskRow(*row)


def _open_for_results(session: Session, task: TaskRow, kinds: tuple[str, ...]) -> None:
    if task.kind not in kinds:
        raise BadRequest(f"task {task.id} is a {task.kind} task; this endpoint takes {'/'.join(kinds)} results")
    _still_open(session, task, task.status)


def _still_open(session: Session, task: TaskRow, status: str) -> None:
    """409 when the task has its answer; 410 when it is gone, saying so (with ``run_id`` and ``run_status``)
    when its run ended, so the node forgets the run's tasks instead of retraining them."""
    if status == TaskStatus.done:
        raise Conflict(f"task {task.id} already has a result")
    if status == TaskStatus.rejected:
        raise Gone(f"task {task.id} was rejected (the hub refused its answer); its round goes on without it")
    if status in (TaskStatus.dropped, TaskStatus.cancelled, TaskStatus.refused):
        run = session.execute(select(Run.status, Run.error).where(Run.id == task.run_id)).first()
        if run is not None and run.status != RunStatus.running:
            why = f"run {task.run_id} {run.status}" + (f": {run.error}" if run.error else "")
            raise Gone(f"{why}; its task {task.id} is not needed any more", run_id=task.run_id,
                       run_status=run.status)
        raise Gone(f"task {task.id} was {status}; its round has moved on")


class Rejected(BadRequest):
    """The hub refused a node's answer: the task is closed as ``rejected`` and a ``task.rejected`` ledger
    entry names the reason (both committed). ``answer`` is for the run driver, which stops waiting for it."""

    def __init__(self, message: str, task: TaskRow, answer: Answer) -> None:
        super().__init__(message)
        self.task = task
        self.answer = answer


MAX_REASON = 1000
"""How much of a rejection's reason the task row and the ledger keep (a node controls its length)."""


def _reject(
    session: Session, actor: Principal, task: TaskRow, what: str, reason: str, now: datetime,
    signed: SignedCall | None, handed_out_at: datetime | None,
) -> NoReturn:
    """Close ``task`` as rejected with a ledger entry, in a transaction of its own, and raise :class:`Rejected`.

    The node cannot answer the task again, so the round neither waits for its deadline nor takes a second try.
    A task that is no longer open gets the usual 409/410 and no entry.
    """
    reason = reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."
    session.rollback()
    _answer(session, task, signed, handed_out_at, status=TaskStatus.rejected, done_at=now, error=reason)
    number, project_id = session.execute(
        select(Round.number, Run.project_id).join(Task, Task.round_id == Round.id)
        .join(Run, Run.id == Task.run_id).where(Task.id == task.id)
    ).one()
    ledger.record(
        session, "task.rejected", actor.label,
        {"run_id": task.run_id, "round": number, "task_id": task.id, "kind": task.kind,
         "org": actor.org_name, "reason": reason},
        scope=ledger.project_scope(project_id),
    )
    session.commit()
    raise Rejected(f"{what} rejected: {reason}", task, Answer(task.id, TaskStatus.rejected, reason=reason))


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors())


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
        _still_open(session, task, session.scalar(select(TASKS.c.status).where(TASKS.c.id == task.id)))
        raise Conflict(f"task {task.id} changed state while its answer was stored")


def submit_update(
    session: Session,
    blobs: BlobStore,
    cache: TensorCache,
    actor: Principal,
    task_id: int,
    payload: bytes,
    now: datetime,
    rules: Callable[[int], AnswerRules | None] | None = None,
    signed: SignedCall | None = None,
    handed_out_at: datetime | None = None,
    known: TaskRow | None = None,
    durable: Callable[[int, int], bool] | None = None,
) -> tuple[TaskRow, Answer]:
    """Validate an uploaded update (see :func:`~consortium.hub.services.answer_rules.check_answer_update`) and store it; :class:`Rejected` otherwise.

    ``rules`` may supply a run's :class:`AnswerRules` from memory. ``durable(run_id, task_id)``: write the upload to the
    blob store before the answer commits (another hub replica drives the run and reads it from there);
    otherwise it is staged in memory for this process's driver. Returns the task and its committed answer,
    validated tensors included, for the run driver.
    """
    task = own_task(session, actor, task_id, known, answer="update")
    _still_open(session, task, task.status)

    def reject(reason: str) -> NoReturn:
        _reject(session, actor, task, "update", reason, now, signed, handed_out_at)

    if task.kind not in (TaskKind.fit.value, TaskKind.init.value, TaskKind.stats.value):
        reject(f"task {task.id} is a {task.kind} task; this endpoint takes fit/init/stats updates")
    try:
        tensors, meta = decode_update(payload)
    except ValidationError as exc:
        reject(f"bad update metadata: {_problems(exc)}")
    except ValueError as exc:
        reject(str(exc))
    known_rules = rules(task.run_id) if rules is not None else None
    run_rules = known_rules if known_rules is not None else answer_rules(session, task.run_id)
    try:
        check_answer_update(run_rules, task, tensors, meta, lambda: cache.get(task.params_sha256))
    except FLError as exc:
        reject(str(exc))
    stored = durable is not None and durable(task.run_id, task.id)
    digest = blobs.put(payload) if stored else blobs.stage(payload)
    faults.point("upload.staged")
    result = meta.model_dump()
    try:
        _answer(session, task, signed, handed_out_at, update_sha256=digest, result=result, status=TaskStatus.done,
                done_at=now)
        session.commit()
    except BaseException:  # not answered (the task closed meanwhile): nobody will read the upload
        if stored:
            blobs.remove([digest])
        else:
            blobs.discard([digest])
        raise
    faults.point("upload.committed")
    return task, Answer(task.id, TaskStatus.done, result, tensors, digest)


def submit_result(
    session: Session, actor: Principal, task_id: int, payload: bytes, now: datetime,
    rules: Callable[[int], AnswerRules | None] | None = None,
    signed: SignedCall | None = None, handed_out_at: datetime | None = None, known: TaskRow | None = None,
) -> tuple[TaskRow, Answer]:
    """Accept an evaluate task's result, the raw JSON of a :class:`TaskResult` (parsed here, so that a
    malformed or non-finite one is rejected like a bad update, not just answered 422)."""
    task = own_task(session, actor, task_id, known, answer="result")
    _still_open(session, task, task.status)

    def reject(reason: str) -> NoReturn:
        _reject(session, actor, task, "result", reason, now, signed, handed_out_at)

    if task.kind != TaskKind.evaluate.value:
        reject(f"task {task.id} is a {task.kind} task; this endpoint takes evaluate results")
    try:
        body = TaskResult.model_validate_json(payload)
    except ValidationError as exc:
        reject(f"bad evaluation result: {_problems(exc)}")
    known_rules = rules(task.run_id) if rules is not None else None
    run_rules = known_rules if known_rules is not None else answer_rules(session, task.run_id)
    try:
        run_rules.check_examples(task.dataset_id, body.num_examples, True, "evaluation result")
    except FLError as exc:
        reject(str(exc))
    result = body.model_dump()
    _answer(session, task, signed, handed_out_at, result=result, status=TaskStatus.done, done_at=now)
    session.commit()
    return task, Answer(task.id, TaskStatus.done, result)


def refuse(
    session: Session, actor: Principal, task_id: int, body: TaskRefusal, now: datetime,
    signed: SignedCall | None = None, handed_out_at: datetime | None = None, known: TaskRow | None = None,
) -> tuple[TaskRow, Answer]:
    """A node declines a task (its policy said no); the round goes on without it."""
    task = own_task(session, actor, task_id, known, answer="refusal")
    _open_for_results(session, task, tuple(k.value for k in TaskKind))
    _answer(session, task, signed, handed_out_at, status=TaskStatus.refused, done_at=now, error=body.reason)
    project_id = session.scalar(select(Run.project_id).where(Run.id == task.run_id))
    ledger.record(
        session, "task.refused", actor.label,
        {"task_id": task.id, "run_id": task.run_id, "reason": body.reason},
        scope=ledger.project_scope(project_id),
    )
    session.commit()
    return task, Answer(task.id, TaskStatus.refused, reason=body.reason)
