"""ASGI middleware that refuses request bodies over the size limit before anything parses them."""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException

Scope = dict[str, Any]

BODY_LIMIT_SCOPE_KEY = "consortium.max_body_bytes"
"""The limit of this request's route, set by the gate (:mod:`consortium.hub.gate`); else ``max_bytes``."""


class BodyTooLarge(HTTPException):
    """Raised by the limited ``receive``: an HTTPException, so that FastAPI's body parsing passes it on and
    the app answers 413 with the message (rather than a generic 400)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            413, f"request body of {size} bytes exceeds the hub's limit of {limit} bytes for this route"
        )


class BodySizeLimit:
    """413 when Content-Length exceeds the limit, or when a streamed body grows past it."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = scope.get(BODY_LIMIT_SCOPE_KEY, self.max_bytes)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await send_json(send, 400, "Content-Length is not a number")
                    return
                if declared > limit:
                    await send_json(send, 413, BodyTooLarge(declared, limit).detail)
                    return
        seen = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(seen, limit)
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            if not started:
                await send_json(send, 413, exc.detail)


async def send_json(send: Any, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """Refuse with ``{"detail": detail}`` straight from middleware, closing the connection: a body the request
    may still be sending is not read."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]
    for name, value in (headers or {}).items():
        raw.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
