"""FastAPI dependencies: the hub state, a database session, and who is calling."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from consortium.hub.gate import (
    AUTHENTICATION_REQUIRED,
    PRINCIPAL_SCOPE_KEY,
    client_address,
    sends_credentials,
)
from consortium.hub.drivers import Scheduler
from consortium.hub.state import HubState
from consortium.hub.services import identity
from consortium.hub.services.errors import Unauthorized
from consortium.hub.services.identity import Principal


async def hub_state(request: Request) -> HubState:
    """The hub's shared state (async: FastAPI would run a plain function in the thread pool)."""
    return request.app.state.hub


async def scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler


def db(request: Request) -> Iterator[Session]:
    with request.app.state.hub.sessions() as session:
        yield session


def signed_path(request: Request) -> str:
    """Path plus query exactly as the client sent and signed it."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if raw else request.url.path
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{query}" if query else path


def _signature_failed(request: Request) -> None:
    """Count a failed signature verification against the caller's address (:mod:`consortium.hub.gate`)."""
    request.app.state.auth_failures.failed("signature", client_address(request.scope))


async def principal(request: Request) -> Principal:
    """Authenticate a user token (Authorization: Bearer) or an org-signed request (X-Consortium-*).

    The gate has already checked a token (its principal is in the scope) and the body-free part of a
    signature; the signature itself covers the body and is checked here.
    """
    checked = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if checked is not None:
        return checked
    state: HubState = request.app.state.hub
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        token = auth[7:].strip()

        def by_token() -> Principal:
            with state.sessions() as session:
                return identity.authenticate_token(session, token)

        return await run_in_threadpool(by_token)
    if any(name.startswith("x-consortium-") for name in request.headers):
        body = await request.body()
        path = signed_path(request)
        headers = dict(request.headers)

        def by_signature() -> Principal:
            with state.sessions() as session:
                return identity.authenticate_signature(
                    session, headers, request.method, path, body, datetime.now(UTC), keys=state.keys
                )

        try:
            return await run_in_threadpool(by_signature)
        except Unauthorized:
            _signature_failed(request)
            raise
    raise Unauthorized(AUTHENTICATION_REQUIRED)


async def optional_principal(request: Request) -> Principal | None:
    """Like :func:`principal` when the caller sends credentials; None (anonymous) when it sends none. For
    routes marked :func:`consortium.hub.gate.optional`."""
    if not sends_credentials(request.scope):
        return None
    return await principal(request)


async def org_call(request: Request) -> identity.SignedCall:
    """An organisation's signed request, verified but with its nonce still to be recorded, so that it can
    ride in the transaction of the request's own write (:func:`identity.in_signed_transaction`).

    A request that FastAPI rejects before its handler runs (a malformed JSON body: 422) leaves no nonce; it
    changes nothing, however often it is sent.
    """
    state: HubState = request.app.state.hub
    if not any(name.startswith(b"x-consortium-") for name, _ in request.scope["headers"]):  # raw: no decoding
        raise Unauthorized("node endpoints need a request signed with the organisation key")
    body = await request.body()
    path = signed_path(request)
    headers = dict(request.headers)

    def verify() -> identity.SignedCall:
        with state.sessions() as session:
            return identity.verify_signature(
                session, headers, request.method, path, body, datetime.now(UTC), keys=state.keys
            )

    try:
        call = identity.verify_signature_cached(
            headers, request.method, path, body, datetime.now(UTC), state.keys
        )
        if call is None:
            call = await run_in_threadpool(verify)
    except Unauthorized:
        _signature_failed(request)
        raise
    state.seen(call.principal.org_id)
    return call


async def org_principal(request: Request) -> Principal:
    """Like :func:`principal` but only an organisation's signed request (node endpoints)."""
    caller = await principal(request)
    if caller.kind != "org":
        raise Unauthorized("node endpoints need a request signed with the organisation key")
    request.app.state.hub.seen(caller.org_id)
    return caller
