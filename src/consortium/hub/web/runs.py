"""A run's page, its live event stream, and starting a run from a project's page.

The page renders the curves so far on the server (SVG, :mod:`.charts`) and a table of rounds; ``run.js``
(served from ``/static/run.js``, the CSP's only script source) then follows ``/runs/{id}/events``, a
server-sent event stream woken by the same broker key as the API's progress long poll, so a closed round
reaches the page as soon as it is committed. The stream reads through :func:`runs.get` with the session's
principal on every wake-up, as ``GET /api/runs/{id}/progress`` does: whoever the API hides the run from
gets a 404 here too. A stream lasts at most :data:`MAX_STREAM_S`; the browser then reconnects through the
gate (a logged-out or revoked session ends there), resuming from the ``Last-Event-ID`` it was given.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response, StreamingResponse

from consortium.hub.deps import db
from consortium.hub.events import wait_for
from consortium.hub.gate import web
from consortium.hub.services import run_views
from consortium.hub.services import runs as run_service
from consortium.hub.services.errors import ServiceError
from consortium.hub.services.identity import Principal
from consortium.hub.state import progress_key
from consortium.hub.web.charts import HEIGHT, WIDTH, charts
from consortium.hub.web.render import WebRoute, caller, error_page, login_redirect, page, posted
from consortium.hub.web.render import secure_headers
from consortium.hub.wire import Id
from consortium.protocol import RunOut
from consortium.statuses import RunStatus

router = APIRouter(route_class=WebRoute, include_in_schema=False)
MAX_STREAM_S = 300.0
"""How long one event stream lasts before the browser reconnects (and the gate checks its session again)."""
KEEPALIVE_S = 15.0
"""A comment line at least this often keeps proxies from closing an idle stream."""
RETRY_MS = 1000


def snapshot(session: Session, who: Principal, run_id: int, after_round: int) -> dict[str, Any]:
    """The run, its rounds closed after ``after_round`` (as JSON) and its nodes, read as ``who``."""
    run = run_service.get(session, who, run_id)
    progress = run_service.progress(session, run, after_round)
    return {"run": progress.run.model_dump(mode="json"),
            "rounds": [r.model_dump(mode="json") for r in progress.rounds],
            "nodes": run_views.nodes_json(session, run), "contributions": progress.contributions}


def resume_point(rounds: list[dict[str, Any]]) -> int:
    """Where a stream picks up: before the first round whose federated evaluation may still change it
    (it arrives with the next round), else after the last round."""
    pending = [r["round"] for r in rounds if r.get("federated_eval_pending")]
    if pending:
        return min(pending) - 1
    return max((r["round"] for r in rounds), default=0)


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.get("/runs/{run_id}")
@web
def run_page(request: Request, run_id: Id, session: Session = Depends(db)) -> Response:
    who = caller(request)
    if who is None:
        return login_redirect(request)
    found = snapshot(session, who, run_id, 0)
    run = RunOut.model_validate(found["run"])
    project = run_service.get(session, who, run_id).project
    rounds = found["rounds"]
    return page(
        request, "run.html", title=f"Run {run.id} of {project.name}", run=run, project_id=project.id,
        charts=charts(rounds, run.rounds), width=WIDTH, height=HEIGHT, rounds=rounds,
        rounds_json=json.dumps(rounds, separators=(",", ":")), after=resume_point(rounds),
        nodes=found["nodes"], live=run.status == RunStatus.running, contributions=found["contributions"],
    )


@router.get("/runs/{run_id}/events")
@web
async def run_events(request: Request, run_id: Id, after: int = 0) -> Response:
    """The run's news as server-sent events: ``run`` (its record), ``round`` (a round closed, or its
    federated evaluation arrived), ``nodes`` (tasks by status, refusals), ``end`` once the run stopped."""
    who = caller(request)
    if who is None:
        return error_page(request, 401, "Log in to follow a run.")
    state = request.app.state.hub
    resume = request.headers.get("last-event-id", "")
    start = int(resume) if resume.isdigit() and len(resume) < 10 else max(0, min(after, 2**31 - 1))

    def read(after_round: int) -> dict[str, Any]:
        with state.sessions() as session:
            return snapshot(session, who, run_id, after_round)

    key = progress_key(run_id)
    woken = state.broker.async_event(key)  # taken before reading: a round closing meanwhile still wakes us
    first = await run_in_threadpool(read, start)  # a forbidden or missing run: 404 before any event

    async def stream() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        ends = loop.time() + MAX_STREAM_S
        sent: dict[int, dict[str, Any]] = {}
        found, after_round, last_nodes, event = first, start, None, woken
        yield f"retry: {RETRY_MS}\n\n"
        while True:
            fresh = [r for r in found["rounds"] if sent.get(r["round"]) != r]
            for rnd in fresh:
                sent[rnd["round"]] = rnd
            after_round = max(after_round, resume_point(list(sent.values()))) if sent else after_round
            for rnd in fresh:
                yield sse("round", rnd)
            if found["nodes"] != last_nodes:
                last_nodes = found["nodes"]
                yield sse("nodes", last_nodes)
            yield sse("run", found["run"], after_round)
            if found["run"]["status"] != RunStatus.running:
                yield sse("end", found["run"]["status"])
                return
            remaining = ends - loop.time()
            if remaining <= 0:
                return
            while not await wait_for(event, min(KEEPALIVE_S, remaining)):
                remaining = ends - loop.time()
                if remaining <= 0:
                    return
                yield ": keepalive\n\n"
            event = state.broker.async_event(key)
            try:
                found = await run_in_threadpool(read, after_round)
            except ServiceError:  # the run became hidden from the caller (their org left the project)
                yield sse("end", "gone")
                return

    response = StreamingResponse(stream(), media_type="text/event-stream")
    secure_headers(response)
    response.headers["X-Accel-Buffering"] = "no"
    return response


@router.post("/projects/{project_id}/runs")
@web
async def start_run(request: Request, project_id: Id) -> Response:
    """Start a run of the project (the API's and the CLI's service call), then show its page."""
    answer = await posted(request)
    if isinstance(answer, Response):
        return answer
    fields, who = answer
    state = request.app.state.hub

    def start() -> int:
        with state.sessions() as session:
            return run_service.start(session, who, project_id).id

    run_id = await run_in_threadpool(start)
    request.app.state.scheduler.ensure(run_id)
    return RedirectResponse(f"/runs/{run_id}", status_code=303)
