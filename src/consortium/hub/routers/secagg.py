"""The node endpoints of secure aggregation: read what the hub published for a stage (long poll) and send
the node's message of a stage. A node takes part as client ``str(task_id)`` of its fit task's round."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from consortium.fl.privacy.secagg.errors import MessageError, ReplayedMessage
from consortium.hub.deps import hub_state, org_call, org_principal
from consortium.hub.events import wait_for
from consortium.hub.gate import upload
from consortium.hub.secagg import SecAggRound, secagg_key
from consortium.hub.services.errors import BadRequest, Conflict, Gone, NotFound, TooLarge
from consortium.hub.services.identity import Principal, SignedCall, in_signed_transaction
from consortium.hub.state import HubState
from consortium.hub.wire import Id, StrictJSONRoute

router = APIRouter(prefix="/api/node/secagg", tags=["secure aggregation"], route_class=StrictJSONRoute)

MAX_WAIT_S = 60.0
ReadStage = Literal["setup", "keys", "shares", "unmask"]
PostStage = Literal["advertise_keys", "share_keys", "masked_input", "unmask"]


def _round(state: HubState, caller: Principal, task_id: int) -> SecAggRound:
    """The open SecAgg round of the caller's task ``task_id`` (404 for none, or another org's task)."""
    secagg_round = state.secagg.get(task_id)
    if secagg_round is None or secagg_round.org_of(task_id) != caller.org_id:
        raise NotFound(f"no secure aggregation is open for task {task_id}")
    return secagg_round


@router.get("/{task_id}/{stage}", responses={204: {"description": "not published yet"},
                                             410: {"description": "the round ended or left this node out"}})
async def read_stage(
    task_id: Id,
    stage: ReadStage,
    wait: float = Query(25.0, ge=0.0, le=MAX_WAIT_S),
    state: HubState = Depends(hub_state),
    caller: Principal = Depends(org_principal),
) -> Response:
    """Long poll: what the hub published for this node at ``stage`` (setup, key directory, its share inbox,
    the unmask request), or 204 after ``wait``."""
    secagg_round = _round(state, caller, task_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        event = state.broker.async_event(secagg_key(secagg_round.round_id))
        try:
            published = secagg_round.read(task_id, stage)
        except LookupError as exc:
            raise Gone(str(exc)) from None
        if published is not None:
            return Response(published, media_type="application/json")
        remaining = deadline - loop.time()
        if remaining <= 0:
            return Response(status_code=204)
        await wait_for(event, remaining)


@router.post("/{task_id}/{stage}", status_code=202)
@upload
async def post_stage(
    task_id: Id,
    stage: PostStage,
    request: Request,
    state: HubState = Depends(hub_state),
    call: SignedCall = Depends(org_call),
) -> dict:
    """The node's message of ``stage`` (JSON of :mod:`consortium.fl.privacy.secagg.messages`; a masked vector
    is base64 of little-endian uint32). A malformed, replayed, wrong-round or wrong-stage message is refused
    with the problem named; the round goes on with the others."""
    secagg_round = _round(state, call.principal, task_id)
    body = await request.body()
    if len(body) > secagg_round.max_body():
        raise TooLarge(f"a {stage} message of round {secagg_round.round_id} is at most "
                       f"{secagg_round.max_body()} bytes, got {len(body)}")

    def accept() -> None:
        with state.sessions() as session:
            def work() -> None:
                call.record_nonce(session)
                session.commit()
                secagg_round.receive(task_id, stage, body)

            in_signed_transaction(session, call, work)

    try:
        await run_in_threadpool(accept)
    except ReplayedMessage as exc:
        raise Conflict(f"secagg {exc}") from None
    except MessageError as exc:
        raise BadRequest(f"secagg {exc}") from None
    return {"status": "accepted"}
