"""Logging in with a user's API token and out again, and the pages' stylesheet and script.

The token is posted in a form (never in a URL), checked with :func:`identity.authenticate_token`, and only
its hash is kept, in the hub's memory, under a new random session id; the browser holds that id in an
HttpOnly, SameSite=Strict cookie (Secure when the hub is reached over HTTPS). Failed logins count as failed
token authentications of the client address (the gate's limiter), like bad API tokens.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from consortium import crypto
from consortium.hub.gate import client_address, public, web
from consortium.hub.services import identity
from consortium.hub.services.errors import Unauthorized
from consortium.hub.web.render import HERE, WebRoute, caller, csrf_refused, error_page, form, page, safe_next
from consortium.hub.web.render import web_session
from consortium.hub.web.sessions import COOKIE, SESSION_SCOPE_KEY

router = APIRouter(route_class=WebRoute, include_in_schema=False)
STYLESHEET = (HERE / "static" / "web.css").read_text()
RUN_SCRIPT = (HERE / "static" / "run.js").read_text()
TOKEN_MAX = 200


def _set_cookie(request: Request, response: Response, sid: str) -> None:
    response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")


@router.get("/static/web.css")
@public
def stylesheet() -> Response:
    return PlainTextResponse(STYLESHEET, media_type="text/css", headers={"Cache-Control": "max-age=3600"})


@router.get("/static/run.js")
@public
def run_script() -> Response:
    """The run page's live curves (the only script the pages' CSP lets run: ``script-src 'self'``)."""
    return PlainTextResponse(RUN_SCRIPT, media_type="text/javascript",
                             headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"})


@router.get("/login")
@web
def login_form(request: Request, next: str = "/") -> Response:  # noqa: A002 - the query parameter's name
    """The login form; a visitor without a session gets an anonymous one (its CSRF token guards the form)."""
    found = web_session(request)
    fresh = None
    if found is None:
        fresh = request.app.state.hub.web.open(None)
        request.scope[SESSION_SCOPE_KEY] = fresh
    response = page(request, "login.html", title="Log in", next=safe_next(next), error=None,
                    logged_in=caller(request) is not None)
    if fresh is not None:
        _set_cookie(request, response, fresh.sid)
    return response


@router.post("/login")
@web
async def login(request: Request) -> Response:
    fields = await form(request)
    refused = csrf_refused(request, fields)
    if refused is not None:
        return refused
    failures = request.app.state.auth_failures
    address = client_address(request.scope)
    wait = failures.retry_after("token", address)
    if wait > 0:
        return error_page(request, 429,
                          f"Too many failed logins from {address}; try again in {int(wait) + 1} s.")
    token = fields.get("token", "").strip()
    target = safe_next(fields.get("next"))
    state = request.app.state.hub
    problem, status = None, 422
    if not token:
        problem = "Enter your API token."
    elif len(token) > TOKEN_MAX:
        problem = f"An API token is at most {TOKEN_MAX} characters."
    else:
        def check() -> identity.Principal:
            with state.sessions() as session:
                return identity.authenticate_token(session, token)

        try:
            await run_in_threadpool(check)
        except Unauthorized as exc:
            failures.failed("token", address)
            problem, status = exc.message, 401
    if problem is not None:
        return page(request, "login.html", status_code=status, title="Log in", next=target,
                    error=problem, logged_in=False)
    old = web_session(request)
    if old is not None:
        state.web.close(old.sid)
    fresh = state.web.open(crypto.hash_token(token))
    response = RedirectResponse(target, status_code=303)
    _set_cookie(request, response, fresh.sid)
    return response


@router.post("/logout")
@web
async def logout(request: Request) -> Response:
    fields = await form(request)
    refused = csrf_refused(request, fields)
    if refused is not None:
        return refused
    found = web_session(request)
    if found is not None:
        request.app.state.hub.web.close(found.sid)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response
