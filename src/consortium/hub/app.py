"""The hub's FastAPI application: wiring of database, blob store, scheduler and routers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from consortium import __version__, faults
from consortium.config import HubSettings
from consortium.hub.blobs import BlobStore
from consortium.hub.db.session import make_engine, migrate, session_factory
from consortium.hub.events import Broker
from consortium.hub.gate import AuthFailures, Gate, public
from consortium.hub.limits import BodySizeLimit
from consortium.hub.security_headers import HubApp
from consortium.hub.routers import (
    admin, catalogue, challenges, credits, governance, ledger, models, open_data, projects, runs, secagg,
    users,
)
from consortium.hub.drivers import Scheduler
from consortium.hub.replicas import ReplicaBroker
from consortium.hub.state import HubState, Replication, parse_answer_key
from consortium.hub.valuation import Valuer
from consortium.hub.services import checkpoints, hub_identity, hub_key, identity, policy, proposals
from consortium.hub.services import open_data as open_data_service
from consortium.hub.services.errors import ServiceError
from consortium.hub.tensor_cache import TensorCache
from consortium.hub.web.pages import ROUTERS as WEB_ROUTERS
from consortium.hub.web.render import web_not_found
from consortium.hub.wire import ERROR_RESPONSES, StrictJSONRoute, validation_error
from consortium.version import code_version

log = logging.getLogger("consortium.hub")



def replica_id() -> str:
    """This process's name in the run leases: host, process id and a random part (unique per start)."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(4)}"


def _nudge(state: HubState, key: str) -> None:
    """Another replica committed an answer (``key``: :func:`answer_key`) to a task of a run whose driver may
    be here: tell its live phase."""
    parsed = parse_answer_key(key)
    if parsed is None:
        return
    run_id, task_id, failed = parsed
    live = state.live.get(run_id)
    if live is not None:
        live.nudge(task_id, failed)


def admin_token_path(settings: HubSettings) -> Path:
    return settings.data_dir / "admin-token"


def _admin_token(settings: HubSettings) -> str:
    """The admin token from settings, or one generated once and kept (mode 0600) in the data directory."""
    if settings.admin_token:
        return settings.admin_token
    path = admin_token_path(settings)
    if path.exists():
        return path.read_text().strip()
    token = "csm_" + secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token


NO_TELEMETRY = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
"""FastAPI's own OpenTelemetry instrumentation, all off (``HubSettings.telemetry``)."""


def create_app(settings: HubSettings) -> FastAPI:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    faults.watch_commits()
    engine = make_engine(settings.db_url)
    migrate(engine)
    sessions = session_factory(engine)
    key = hub_key.load_or_create(settings.key_file)
    hub_id = hub_identity.start(engine, key)
    with sessions() as session:
        identity.ensure_admin(session, _admin_token(settings))
        policy.ensure(session)
        proposals.ensure_project_proposals(session)
        session.commit()
    blobs = BlobStore(settings.blobs)
    replication = Replication(replica_id(), settings.lease_s) if settings.replica else None
    broker = (ReplicaBroker(settings.db_url, replication.replica_id, lambda key: _nudge(state, key))
              if replication is not None else Broker())
    state = HubState(
        sessions=sessions, blobs=blobs, cache=TensorCache(blobs), broker=broker, code_version=code_version(),
        valuer=Valuer(sessions), replication=replication,
    )
    sched = Scheduler(state)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.broker.bind(asyncio.get_running_loop())
        if isinstance(broker, ReplicaBroker):
            broker.start()
        sched.resume_all()
        housekeeping = asyncio.create_task(_housekeeping(state))
        checkpointer = asyncio.create_task(_checkpointer(state, settings))
        try:
            yield
        finally:
            housekeeping.cancel()
            checkpointer.cancel()
            sched.stop()
            if isinstance(broker, ReplicaBroker):
                broker.close()
            state.valuer.close()
            engine.dispose()

    app = HubApp(
        title="consortium hub",
        version=__version__,
        description="Registry, governance and federated-run coordination for a consortium of organisations.",
        lifespan=lifespan,
        telemetry=None if settings.telemetry else NO_TELEMETRY,
    )
    app.state.hub = state
    app.state.scheduler = sched
    app.state.settings = settings
    app.state.auth_failures = AuthFailures(settings.auth_failure_limit, settings.auth_failure_window_s)
    app.router.route_class = StrictJSONRoute
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, web_not_found)

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({**exc.fields, "detail": exc.message}, status_code=exc.status_code)

    @app.get("/api/health", tags=["meta"], responses=ERROR_RESPONSES)
    @public
    def health() -> dict:
        """Liveness, the hub's id (what every signed vote and outcome names) and its signing key (what a
        node's witness pins, and what outcomes and ledger entries are signed with)."""
        return {"status": "ok", "version": state.code_version, "hub_id": hub_id,
                "hub_key": key.public_key_b64, "hub_key_id": key.key_id}

    # The nodes' routes (runs: the long poll and the uploads, most of all requests) come first: both the gate
    # and FastAPI match a request against the routes in this order.
    routers = (runs.router, admin.router, projects.router, models.router, ledger.router, governance.router,
               users.router, secagg.router, credits.router, challenges.router, open_data.router,
               catalogue.router)
    for router in routers:
        app.include_router(router, responses=ERROR_RESPONSES)
    for router in WEB_ROUTERS:
        app.include_router(router)
    routers += WEB_ROUTERS
    # The gate matches the routes themselves (recent FastAPI keeps an included router as one lazy entry);
    # the app's own (health, /openapi.json, /docs) are plain Starlette routes.
    routes = [r for r in app.router.routes if isinstance(r, Route)] + [r for x in routers for r in x.routes]
    # Added last runs first: the gate (route, credentials, body limit), then the limit on what is read.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_json_bytes)
    app.add_middleware(Gate, routes=routes, state=state, settings=settings,
                       failures=app.state.auth_failures, tokens=state.tokens)
    return app


async def _housekeeping(state: HubState, every_s: float = 60.0) -> None:
    def prune() -> None:
        with state.sessions() as session:
            identity.prune_nonces(session, datetime.now(UTC))
        with state.sessions() as session:
            proposals.settle_due(session)
            session.commit()
        open_data_service.expire_uploads(state.blobs, time.time())

    while True:
        await asyncio.sleep(every_s)
        try:
            await run_in_threadpool(prune)
        except Exception:  # housekeeping must never take the hub down
            log.exception("housekeeping (nonce pruning, settling closed proposals, stale uploads) failed")


async def _checkpointer(state: HubState, settings: HubSettings) -> None:
    """Extend the ledger's Merkle tree and sign a checkpoint when due (:func:`checkpoints.maybe_checkpoint`),
    once a second, off every request's path."""
    tick = min(1.0, settings.checkpoint_interval_s)

    def step() -> None:
        with state.sessions() as session:
            checkpoints.maybe_checkpoint(session, datetime.now(UTC), settings.checkpoint_every,
                                         settings.checkpoint_interval_s)

    while True:
        try:
            await run_in_threadpool(step)
        except Exception:  # a failed checkpoint is retried at the next tick; the hub goes on
            log.exception("ledger checkpoint failed")
        await asyncio.sleep(tick)
