"""Security headers on every answer of the hub, whoever writes it: a route, the web pages, the gate's 401 and
429, the body limit's 413, a 404, a static file, an event stream, even Starlette's own 500.

:class:`SecureHeaders` wraps the whole ASGI application (:class:`HubApp` puts it outside Starlette's error
middleware, so that an unhandled error's 500 has them too) and adds, to each response that does not set its
own:

- ``X-Content-Type-Options: nosniff`` and ``X-Frame-Options: DENY`` (with CSP's ``frame-ancestors 'none'``
  for browsers that know it);
- ``Content-Security-Policy``: the web pages' policy (:data:`WEB_POLICY`: scripts, styles and connections
  only from the hub, no inline code) on HTML, nothing at all (:data:`API_POLICY`) on JSON, files and streams;
  FastAPI's ``/docs`` and ``/redoc`` viewers load their code from a CDN with an inline start-up script, and
  get :data:`DOCS_POLICY`, which allows exactly that;
- ``Referrer-Policy: same-origin``;
- ``Cache-Control: no-store``: nothing the hub answers is kept by a browser or a proxy, authenticated
  answers above all (the static scripts and stylesheet set their own ``max-age``);
- ``Strict-Transport-Security`` when the request came over HTTPS (the hub serving TLS, or a trusted proxy's
  ``X-Forwarded-Proto: https`` that uvicorn applies).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

WEB_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
              "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
"""The web pages': no script or style from anywhere but the hub, and no inline code."""
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
"""Everything that is not a page: nothing may run or load in its name."""
DOCS_POLICY = ("default-src 'none'; script-src 'self' https://cdn.jsdelivr.net 'unsafe-inline'; "
               "style-src https://cdn.jsdelivr.net https://fonts.googleapis.com 'unsafe-inline'; "
               "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
               "https://cdn.jsdelivr.net; connect-src 'self'; worker-src blob:; frame-ancestors 'none'; "
               "base-uri 'none'")
"""FastAPI's API viewers (``/docs``, ``/redoc``): their scripts come from a CDN and start inline."""
DOCS_PATHS = ("/docs", "/redoc", "/docs/oauth2-redirect")
HSTS = "max-age=31536000"


def _policy(path: str, content_type: bytes) -> str:
    if path in DOCS_PATHS:
        return DOCS_POLICY
    return WEB_POLICY if content_type.startswith(b"text/html") else API_POLICY


def headers_for(scope: dict[str, Any], present: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """The security headers a response to ``scope`` lacks, given the headers it has (lower-case names)."""
    wanted = {
        b"x-content-type-options": "nosniff",
        b"x-frame-options": "DENY",
        b"content-security-policy": _policy(scope.get("path", ""), present.get(b"content-type", b"")),
        b"referrer-policy": "same-origin",
        b"cache-control": "no-store",
    }
    if scope.get("scheme") == "https":
        wanted[b"strict-transport-security"] = HSTS
    return [(name, value.encode("latin-1")) for name, value in wanted.items() if name not in present]


class SecureHeaders:
    """ASGI middleware: the headers of :func:`headers_for` on every HTTP response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def secured(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {bytes(name).lower(): bytes(value) for name, value in headers}
                message = message | {"headers": headers + headers_for(scope, present)}
            await send(message)

        await self.app(scope, receive, secured)


class HubApp(FastAPI):
    """The hub's FastAPI application, with :class:`SecureHeaders` outside every other middleware."""

    def build_middleware_stack(self) -> Any:
        return SecureHeaders(super().build_middleware_stack())
