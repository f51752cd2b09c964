"""What every web page shares: the Jinja2 environment (autoescape on for every template), the caller and
session of a request, CSRF checks and form parsing, and the route class that turns a service's refusal into
an HTML page (a forbidden object reads exactly as a missing one: the service says "no ..." for both)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, RedirectResponse, Response

from consortium.hub.security_headers import WEB_POLICY
from consortium.hub.services.errors import ServiceError
from consortium.hub.services.identity import Principal
from consortium.hub.web.sessions import SESSION_SCOPE_KEY, WEB_PRINCIPAL_SCOPE_KEY, WebSession

HERE = Path(__file__).parent
MAX_FIELD_CHARS = 4000
"""Longest value of a form field the pages accept (the body limit bounds the whole form)."""

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every template, whatever its name: user text is never rendered unescaped
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
NAV = (("/", "Overview"), ("/members", "Members"), ("/catalogue", "Catalogue"), ("/projects", "Projects"),
       ("/models", "Models"), ("/challenges", "Challenges"), ("/ledger", "Ledger"))


def caller(request: Request) -> Principal | None:
    """The logged-in user of the request's session (None: anonymous). For routes marked ``web``."""
    return request.scope.get(WEB_PRINCIPAL_SCOPE_KEY)


def web_session(request: Request) -> WebSession | None:
    return request.scope.get(SESSION_SCOPE_KEY)


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` in the base layout with the caller, the navigation and the CSRF token."""
    found = web_session(request)
    html = templates.get_template(template).render(
        who=caller(request), nav=NAV, path=request.url.path,
        csrf=found.csrf if found is not None else "", **context,
    )
    response = HTMLResponse(html, status_code=status_code)
    secure_headers(response)
    return response


def secure_headers(response: Response) -> None:
    """No script or style from anywhere but the hub, no framing, no sniffing, no referrer leaving the hub."""
    response.headers["Content-Security-Policy"] = WEB_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"


def error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    titles = {400: "Bad request", 401: "Log in needed", 403: "Forbidden", 404: "Not found",
              409: "Conflict", 413: "Too large", 429: "Too many attempts"}
    return page(request, "error.html", status_code=status_code,
                title=titles.get(status_code, "Error"), message=message)


async def web_not_found(request: Request, exc: StarletteHTTPException) -> Response:
    """The app's HTTP errors: a logged-in browser that asks for an address no page has gets the 404 page
    (the gate lets it through: :meth:`consortium.hub.gate.Gate.__call__`), everyone else FastAPI's JSON."""
    if exc.status_code == 404 and caller(request) is not None:
        return error_page(request, 404, f"no page {request.url.path}")
    return await http_exception_handler(request, exc)


def login_redirect(request: Request) -> RedirectResponse:
    """To the login page, coming back to this page afterwards."""
    response = RedirectResponse(f"/login?next={request.url.path}", status_code=303)
    return response


def safe_next(target: str | None) -> str:
    """A same-site path to go to after logging in (anything else: the overview)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def form(request: Request) -> dict[str, str]:
    """The request's URL-encoded form, first value of each field, each at most :data:`MAX_FIELD_CHARS`
    long (longer ones are cut, and the page's own checks then refuse them by name)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {key: values[0][:MAX_FIELD_CHARS + 1]
            for key, values in parse_qs(body, keep_blank_values=True).items()}


def csrf_refused(request: Request, fields: dict[str, str]) -> HTMLResponse | None:
    """A 403 page when the form's CSRF token is missing or not the session's; None when it is good."""
    found = web_session(request)
    if found is None or not found.csrf_ok(fields.get("csrf")):
        return error_page(request, 403, "This form has expired or did not come from this hub's pages "
                                        "(missing or wrong CSRF token). Reload the page and try again.")
    return None


async def posted(request: Request) -> tuple[dict[str, str], Principal] | Response:
    """The posted form and the logged-in caller when its CSRF token is good; else the page that refuses it
    (403 for the token, the login page for no session)."""
    fields = await form(request)
    refused = csrf_refused(request, fields)
    if refused is not None:
        return refused
    who = caller(request)
    if who is None:
        return login_redirect(request)
    return fields, who


class WebRoute(APIRoute):
    """A page route: a :class:`ServiceError` becomes an HTML page with its status and message, and an
    address whose id or name is malformed a 404 page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                return error_page(request, exc.status_code, exc.message)
            except RequestValidationError:  # a malformed id or name in the address: no such page
                return error_page(request, 404, f"no page {request.url.path}")

        return guarded
