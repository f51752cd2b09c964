"""Runs, their progress, and the node-facing task endpoints (long poll, params, updates, results)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from consortium.hub.deps import db, hub_state, org_call, org_principal, principal, scheduler
from consortium.hub.events import wait_for
from consortium.hub.gate import upload
from consortium.hub.live import Answer, TaskRow
from consortium.hub.drivers import Scheduler
from consortium.hub.state import HubState, answer_key, org_key, progress_key
from consortium.hub.services import privacy_charges, task_claims
from consortium.hub.services import runs as run_service
from consortium.hub.services.identity import Principal, SignedCall, in_signed_transaction
from consortium.hub.services.task_messages import task_json
from consortium.hub.wire import AfterRound, Id, StrictJSONRoute
from consortium.privacy_wire import PrivacyCharge
from consortium.protocol import (
    SAFETENSORS_MEDIA_TYPE, RunOut, RunProgress, TaskBrief, TaskOut, TaskRefusal, TaskResult,
)
from consortium.statuses import RunStatus, TaskStatus
from consortium.task_terms import KNOWN_TERMS_MAX_LENGTH, known_terms

router = APIRouter(prefix="/api", tags=["runs"], route_class=StrictJSONRoute)

MAX_WAIT_S = 60.0


def hand_to_driver(state: HubState, run_id: int, answer: Answer) -> None:
    """Take the answered task off the board and give its committed answer to the run's driver if it runs in
    this process (else the driver finds it in the database; with replicas it is told to look at once)."""
    state.board.withdraw([answer.task_id])
    phase = state.live.get(run_id)
    taken = phase is not None and phase.answer(answer)
    if not taken and state.replication is not None:
        state.broker.notify(answer_key(run_id, answer.task_id, answer.status != TaskStatus.done))


@router.post("/projects/{project_id}/runs", response_model=RunOut, status_code=201)
def start_run(
    project_id: Id,
    session: Session = Depends(db),
    caller: Principal = Depends(principal),
    sched: Scheduler = Depends(scheduler),
):
    run = run_service.start(session, caller, project_id)
    sched.ensure(run.id)
    return run_service.to_out(session, run)


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(run_id: Id, session: Session = Depends(db), caller: Principal = Depends(principal)):
    return run_service.to_out(session, run_service.get(session, caller, run_id))


@router.get("/runs/{run_id}/progress", response_model=RunProgress)
async def run_progress(
    run_id: Id,
    after_round: AfterRound = 0,
    wait: float = Query(0.0, ge=0.0, le=MAX_WAIT_S),
    state: HubState = Depends(hub_state),
    caller: Principal = Depends(principal),
):
    """Rounds closed after ``after_round``; with ``wait`` it long-polls until there is news."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        event = state.broker.async_event(progress_key(run_id))

        def read() -> RunProgress:
            with state.sessions() as session:
                return run_service.progress(session, run_service.get(session, caller, run_id), after_round)

        progress = await run_in_threadpool(read)
        remaining = deadline - asyncio.get_running_loop().time()
        if progress.rounds or progress.run.status != RunStatus.running or remaining <= 0:
            return progress
        await wait_for(event, remaining)


TASK_DELIVERY = {
    "content": {SAFETENSORS_MEDIA_TYPE: {}},
    "description": "the task as JSON (a TaskOut, or a TaskBrief when the node holds its terms), or, when the "
                   "node lacks the task's params, the params as safetensors with the task JSON under "
                   "__metadata__['task']",
}


@dataclass(frozen=True)
class Held:
    """What a polling node already holds and need not be sent again: params and task terms, by SHA-256."""

    params: str | None = None
    terms: frozenset[str] = frozenset()


def held(
    have: str | None = Query(None, description="SHA-256 of the params the node already holds"),
    terms: str | None = Query(None, max_length=KNOWN_TERMS_MAX_LENGTH,
                              description="SHA-256s (comma-separated) of the task terms the node holds: a task "
                                          "with those terms comes as a TaskBrief, without them"),
) -> Held:
    return Held(have, known_terms(terms))


async def deliver_next_task(
    state: HubState, caller: Principal, wait: float, holds: Held, query_each_time: bool = True,
    since: asyncio.Event | None = None, query_first: bool | None = None,
) -> Response | None:
    """The caller's next task as soon as one exists, with its params and terms unless the node ``holds``
    them; None after ``wait`` seconds without one.

    Tasks come off the board of this process's drivers (with replicas, checked against the database: a node
    may have answered one through another replica); the database (tasks the board does not know) is
    asked on every wake-up (the polls woken together are claimed in one batch: ``state.claims``), or with
    ``query_each_time=False`` only once ``wait`` is up, which keeps the query off the moments right after an
    upload, when the driver is busy aggregating. ``since``: the org's event, taken before the caller's last
    write (an upload), so that a task opened after that write wakes this poll; ``query_first``: whether the
    database is asked before the first wait (default: ``query_each_time``).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    query = query_each_time if query_first is None else query_first
    event = since
    while True:
        event = event or state.broker.async_event(org_key(caller.org_id))
        task = state.board.take(caller.org_id, state.clock())
        if task is not None and state.replication is not None and not await state.open_tasks.get(task.id):
            state.board.withdraw([task.id])  # answered through another replica before this driver heard of it
            continue
        if task is None and query:
            task = await state.claims.get(caller.org_id)
        if task is not None:
            message = task_json(task, holds.terms)
            if task.params_sha256 is None or task.params_sha256 == holds.params:
                return Response(message, media_type="application/json")
            return Response(state.cache.delivery(task.params_sha256, {"task": message}),
                            media_type=SAFETENSORS_MEDIA_TYPE)
        remaining = deadline - loop.time()
        if remaining <= 0:
            if not query:
                query = True
                continue
            return None
        await wait_for(event, remaining)
        event = None
        state.seen(caller.org_id)
        query = query_each_time


@router.get(
    "/node/tasks/next",
    response_model=TaskOut | TaskBrief,
    responses={204: {"description": "no work yet"}, 200: TASK_DELIVERY},
)
async def next_task(
    wait: float = Query(25.0, ge=0.0, le=MAX_WAIT_S),
    holds: Held = Depends(held),
    state: HubState = Depends(hub_state),
    caller: Principal = Depends(org_principal),
):
    """Long poll: answers with a task as soon as one exists for the caller's org, or 204 after ``wait``.

    The task's params and terms come in the same answer unless the node says it already has them (``have``,
    ``terms``).
    """
    delivery = await deliver_next_task(state, caller, wait, holds)
    return delivery if delivery is not None else Response(status_code=204)


@router.get("/node/tasks/{task_id}/params", response_class=Response, responses={
    200: {"content": {SAFETENSORS_MEDIA_TYPE: {}}, "description": "the task's params"},
    204: {"description": "the task has no params (a k-means client init)"}})
def task_params(
    task_id: Id,
    session: Session = Depends(db),
    state: HubState = Depends(hub_state),
    caller: Principal = Depends(org_principal),
) -> Response:
    task = run_service.own_task(session, caller, task_id)
    if task.params_sha256 is None:
        return Response(status_code=204)
    return Response(state.blobs.get(task.params_sha256), media_type=SAFETENSORS_MEDIA_TYPE,
                    headers={"X-Params-SHA256": task.params_sha256})


@router.post(
    "/node/tasks/{task_id}/update",
    status_code=202,
    responses={202: {"description": "update accepted; no next task within ``wait``"},
               200: {**TASK_DELIVERY, "description": "update accepted; the next task: "
                                                      + TASK_DELIVERY["description"]}},
)
@upload
async def post_update(
    task_id: Id,
    request: Request,
    wait: float = Query(0.0, ge=0.0, le=MAX_WAIT_S, description="then long-poll this long for the next task"),
    holds: Held = Depends(held),
    state: HubState = Depends(hub_state),
    call: SignedCall = Depends(org_call),
):
    """Accept a fit/init update. With ``wait`` the answer also carries the node's next task, like the long
    poll, so that a node needs one request per round."""
    payload = await request.body()
    org_id = call.principal.org_id
    # Taken before the upload's write: a task opened from then on wakes the wait below, so the database need
    # only be asked for tasks opened before it (another run's, opened while the node trained).
    since = state.broker.async_event(org_key(org_id)) if wait > 0 else None
    replicated = state.replication is not None

    def accept() -> bool:
        """Accept the update; with replicas, whether the org has another open task in the database."""
        with state.sessions() as session:
            task, answer = answered(state, lambda: in_signed_transaction(
                session, call, lambda: run_service.submit_update(
                    session, state.blobs, state.cache, call.principal, task_id, payload, state.clock(),
                    rules=lambda run_id: state.answer_rules(session, run_id), signed=call,
                    handed_out_at=state.board.handed_out_at(task_id), known=state.board.row(task_id),
                    durable=state.durable_upload,
                )))
            hand_to_driver(state, task.run_id, answer)
            return replicated and since is not None and task_claims.has_open_task(
                session, org_id, state.clock())

    more = await run_in_threadpool(accept)
    if wait > 0:
        # One hub knows its next task from its board; a replica may hear of it only through the database,
        # which it asks at once only when the org has another open task there (usually it has none: the node
        # just answered its only one, and the next is announced through the org's event).
        delivery = await deliver_next_task(state, call.principal, wait, holds, query_each_time=replicated,
                                           since=since, query_first=more)
        if delivery is not None:
            return delivery
    return {"status": "accepted"}


def answered(state: HubState, submit: Callable[[], tuple[TaskRow, Answer]]) -> tuple[TaskRow, Answer]:
    """``submit()``; when it rejects the answer, the driver still learns at once that the task is closed."""
    try:
        return submit()
    except run_service.Rejected as exc:
        hand_to_driver(state, exc.task.run_id, exc.answer)
        raise


@router.post(
    "/node/tasks/{task_id}/result",
    status_code=202,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": TaskResult.model_json_schema()}}}},
)
async def post_result(
    task_id: Id,
    request: Request,
    state: HubState = Depends(hub_state),
    call: SignedCall = Depends(org_call),
) -> dict:
    """An evaluate task's :class:`TaskResult`. The body is parsed by the service, not by FastAPI, so that a
    malformed or non-finite result closes the task as rejected (with a ledger entry) instead of a bare 422."""
    payload = await request.body()

    def accept() -> None:
        with state.sessions() as session:
            task, answer = answered(state, lambda: in_signed_transaction(
                session, call, lambda: run_service.submit_result(
                    session, call.principal, task_id, payload, state.clock(),
                    rules=lambda run_id: state.answer_rules(session, run_id), signed=call,
                    handed_out_at=state.board.handed_out_at(task_id),
                    known=state.board.row(task_id),
                )))
        hand_to_driver(state, task.run_id, answer)

    await run_in_threadpool(accept)
    return {"status": "accepted"}


@router.post("/node/tasks/{task_id}/refusal", status_code=202)
def post_refusal(
    task_id: Id,
    body: TaskRefusal,
    session: Session = Depends(db),
    state: HubState = Depends(hub_state),
    call: SignedCall = Depends(org_call),
) -> dict:
    task, answer = in_signed_transaction(session, call, lambda: run_service.refuse(
        session, call.principal, task_id, body, state.clock(), signed=call,
        handed_out_at=state.board.handed_out_at(task_id), known=state.board.row(task_id),
    ))
    hand_to_driver(state, task.run_id, answer)
    return {"status": TaskStatus.refused}


@router.post("/node/tasks/{task_id}/privacy-charge", status_code=201)
def post_privacy_charge(
    task_id: Id,
    body: PrivacyCharge,
    session: Session = Depends(db),
    call: SignedCall = Depends(org_call),
) -> dict:
    """A node reports the round it charged to its dataset's privacy budget before training (mirrored in the
    ledger as ``privacy.charged``); the same task again gets its first charge back."""
    charge = in_signed_transaction(session, call, lambda: privacy_charges.record_charge(
        session, call.principal, task_id, body, signed=call))
    return {"task_id": charge.task_id, "run_id": charge.run_id, "round": charge.round}
