"""The hub's outermost middleware: who is calling is settled before a single body byte is read.

FastAPI reads a request's body before it resolves dependencies, so authentication that waits for them lets
anyone make the hub read (and hold) large bodies. For each request the gate finds the route, then:

- a route marked :func:`public` or :func:`enrolment` (and FastAPI's own ``/openapi.json`` and ``/docs``)
  passes, with the small ``max_public_bytes`` body limit;
- a route marked :func:`optional` (public reads: cards, released models) passes a caller that sends no
  credentials as anonymous, and authenticates one that sends any (bad ones get 401, never anonymity), with
  the small body limit either way;
- any other route needs a valid API token, checked here (positive answers cached briefly) and handed on to
  :func:`consortium.hub.deps.principal` in the ASGI scope, or signature headers whose key is an admitted
  org's and whose timestamp lies in the window (the signature covers the body, so ``deps`` checks it once
  the body is read); otherwise 401, and the body is never read;
- a route marked :func:`web` (the web pages) ignores API credentials: the session cookie, when it names a
  live session, is resolved to the session and its user's principal (:mod:`consortium.hub.web.sessions`),
  and the caller is anonymous otherwise; small body limit (form posts);
- its body limit is ``max_upload_bytes`` for routes marked :func:`upload` and ``max_json_bytes`` for the rest.

Failed token authentications, signature verifications (here and in ``deps``) and enrolments are counted per
client address (the TCP peer) and kind; over the limit, that kind of attempt from that address gets 429 with
``Retry-After`` until the oldest failure leaves the window.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Match

from consortium import crypto
from consortium.config import HubSettings
from consortium.hub.limits import BODY_LIMIT_SCOPE_KEY, send_json
from consortium.hub.ratelimit import FailureLimiter
from consortium.hub.services import identity
from consortium.hub.services.errors import Unauthorized
from consortium.hub.web import sessions as web_sessions

if TYPE_CHECKING:
    from consortium.hub.state import HubState

PRINCIPAL_SCOPE_KEY = "consortium.principal"
"""The :class:`identity.Principal` of a request whose API token the gate checked."""

Access = Literal["public", "enrolment", "optional", "upload", "web", "authenticated"]
Kind = Literal["token", "signature", "enrolment"]
F = TypeVar("F", bound=Callable[..., Any])
_ACCESS_ATTR = "__consortium_access__"
_WHAT = {"token": "failed token authentications", "signature": "failed signature verifications",
         "enrolment": "failed enrolments"}
AUTHENTICATION_REQUIRED = (
    "authentication required: send an API token (Authorization: Bearer ...) or sign the request with the "
    "organisation key"
)


def _mark(access: Access) -> Callable[[F], F]:
    def mark(endpoint: F) -> F:
        setattr(endpoint, _ACCESS_ATTR, access)
        return endpoint

    return mark


public = _mark("public")
"""Route decorator: no credentials needed (small body limit)."""
enrolment = _mark("enrolment")
"""Route decorator: public, and each 401 it answers counts as a failed enrolment of the caller's address."""
optional = _mark("optional")
"""Route decorator: authenticated when the caller sends credentials, else anonymous (small body limit); the
route takes :func:`consortium.hub.deps.optional_principal`."""
upload = _mark("upload")
"""Route decorator: authenticated, and its body may reach ``max_upload_bytes``."""
web = _mark("web")
"""Route decorator: a web page; its caller is the user of the session cookie, anonymous without a live one
(small body limit)."""


def _credentials(scope: dict[str, Any]) -> tuple[str | None, dict[str, str]]:
    """The request's Authorization header (None without one) and its X-Consortium-* signature headers."""
    authorization = None
    signed: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name.startswith(b"x-consortium-"):
            signed[name.decode("latin-1")] = value.decode("latin-1")
    return authorization, signed


def sends_credentials(scope: dict[str, Any]) -> bool:
    """Whether the request carries an Authorization header or signature headers."""
    authorization, signed = _credentials(scope)
    return authorization is not None or bool(signed)


def client_address(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class AuthFailures:
    """Failed authentications per (kind, client address), over a sliding window; thread-safe."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._limiter = FailureLimiter(limit, window_s)
        self._clock = clock
        self._lock = threading.Lock()

    def retry_after(self, kind: Kind, address: str) -> float:
        """Seconds until ``address`` may try ``kind`` again; 0 when it may now."""
        with self._lock:
            return self._limiter.retry_after((kind, address), self._clock())

    def failed(self, kind: Kind, address: str) -> None:
        with self._lock:
            self._limiter.fail((kind, address), self._clock())


async def too_many(send: Any, kind: Kind, address: str, wait: float) -> None:
    seconds = max(1, math.ceil(wait))
    await send_json(send, 429, f"too many {_WHAT[kind]} from {address}; try again in {seconds} s",
                    {"Retry-After": str(seconds)})


class _NotCached(Exception):
    pass


class Gate:
    """ASGI middleware: route access, per-route body limits and authentication before the body."""

    def __init__(self, app: Any, *, routes: list[BaseRoute], state: HubState, settings: HubSettings,
                 failures: AuthFailures, tokens: identity.TokenCache) -> None:
        self.app = app
        self.routes = routes
        self.state = state
        self.settings = settings
        self.failures = failures
        self.tokens = tokens

    def access(self, scope: dict[str, Any]) -> Access:
        """The access mark of the route ``scope`` goes to (a path known under another method counts)."""
        partial = None
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return self._access_of(route)
            if match is Match.PARTIAL and partial is None:
                partial = route
        return self._access_of(partial) if partial is not None else "authenticated"

    @staticmethod
    def _access_of(route: BaseRoute) -> Access:
        if not isinstance(route, APIRoute):
            return "public"  # FastAPI's own routes: the OpenAPI document and its viewers
        return getattr(route.endpoint, _ACCESS_ATTR, "authenticated")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        access = self.access(scope)
        address = client_address(scope)
        if access in ("public", "enrolment"):
            scope[BODY_LIMIT_SCOPE_KEY] = self.settings.max_public_bytes
            if access == "enrolment":
                wait = self.failures.retry_after("enrolment", address)
                if wait > 0:
                    await too_many(send, "enrolment", address, wait)
                    return
                send = self._counting_401(send, address)
            await self.app(scope, receive, send)
            return
        s = self.settings
        if access == "web":
            scope[BODY_LIMIT_SCOPE_KEY] = s.max_public_bytes
            await self._web_session(scope)
            await self.app(scope, receive, send)
            return
        if access == "authenticated" and not scope["path"].startswith("/api") \
                and not sends_credentials(scope):
            # No route has this address (every page is marked): a logged-in browser gets the 404 page,
            # anyone else the 401 below, as for any address that needs credentials.
            scope[BODY_LIMIT_SCOPE_KEY] = s.max_public_bytes
            await self._web_session(scope)
            if scope.get(web_sessions.WEB_PRINCIPAL_SCOPE_KEY) is not None:
                await self.app(scope, receive, send)
                return
        if access == "optional":
            scope[BODY_LIMIT_SCOPE_KEY] = s.max_public_bytes
            if not sends_credentials(scope):
                await self.app(scope, receive, send)
                return
        else:
            scope[BODY_LIMIT_SCOPE_KEY] = s.max_upload_bytes if access == "upload" else s.max_json_bytes
        if await self._authenticate(scope, send, address):
            await self.app(scope, receive, send)

    async def _web_session(self, scope: dict[str, Any]) -> None:
        """Put the request's web session (None without a live one) and its principal (when logged in) in
        the scope."""
        sessions = self.state.web
        found = sessions.get(web_sessions.cookie_value(scope))
        scope[web_sessions.SESSION_SCOPE_KEY] = found
        if found is None or found.token_hash is None:
            return

        def lookup() -> identity.Principal | None:
            with self.state.sessions() as session:
                return web_sessions.resolve(session, sessions, found)

        who = await run_in_threadpool(lookup)
        if who is None:
            scope[web_sessions.SESSION_SCOPE_KEY] = None
        else:
            scope[web_sessions.WEB_PRINCIPAL_SCOPE_KEY] = who

    def _counting_401(self, send: Any, address: str) -> Any:
        async def counting(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.failures.failed("enrolment", address)
            await send(message)

        return counting

    async def _authenticate(self, scope: dict[str, Any], send: Any, address: str) -> bool:
        """True when the request may go on; else the answer (401 or 429) has been sent."""
        authorization, signed = _credentials(scope)
        if authorization is not None and authorization[:7].lower() == "bearer ":
            kind: Kind = "token"
        elif signed:
            kind = "signature"
        else:
            await send_json(send, 401, AUTHENTICATION_REQUIRED)
            return False
        wait = self.failures.retry_after(kind, address)
        if wait > 0:
            await too_many(send, kind, address, wait)
            return False
        try:
            if kind == "token":
                scope[PRINCIPAL_SCOPE_KEY] = await self._token(authorization[7:].strip())
            else:
                await self._signature_precheck(signed)
        except Unauthorized as exc:
            self.failures.failed(kind, address)
            await send_json(send, 401, exc.message)
            return False
        return True

    async def _token(self, token: str) -> identity.Principal:
        clock = time.monotonic()
        found = self.tokens.cached(token, clock)
        if found is not None:
            return found

        def lookup() -> identity.Principal:
            with self.state.sessions() as session:
                return identity.authenticate_token(session, token)

        found = await run_in_threadpool(lookup)
        self.tokens.remember(token, found, clock)
        return found

    async def _signature_precheck(self, headers: dict[str, str]) -> None:
        """Headers well formed, timestamp in the window, key an admitted org's (cached, else one query)."""
        keys = self.state.keys
        now = datetime.now(UTC).timestamp()

        def cached(kid: str) -> str:
            key = keys.cached(kid, now)
            if key is None:
                raise _NotCached
            return key.public_key

        def from_database(kid: str) -> str | None:
            with self.state.sessions() as session:
                key = keys.get(session, kid, now)
            return None if key is None else key.public_key

        try:
            try:
                crypto.precheck_request(headers, now, cached)
            except _NotCached:
                await run_in_threadpool(crypto.precheck_request, headers, now, from_database)
        except crypto.SignatureError as exc:
            raise Unauthorized(f"request signature rejected: {exc.reason}") from None
