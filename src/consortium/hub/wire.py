"""How the hub reads requests and words its errors: strict JSON bodies, bounded path and query parameters,
422s that always render, and the error answers every route documents in the OpenAPI description."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import Field

from consortium import strict_json
from consortium.protocol import INT32_MAX, INT64_MAX, NAME_PATTERN, Wire

Id = Annotated[int, Path(ge=1, le=INT32_MAX, description="a database id: 1 to 2^31 - 1")]
"""Every id in a path (ids are 32-bit integer columns)."""
Name = Annotated[str, Path(pattern=NAME_PATTERN, description="an org, dataset or environment name")]
AfterSeq = Annotated[int, Query(ge=0, le=INT64_MAX, description="only ledger entries after this seq")]
AfterRound = Annotated[int, Query(ge=0, le=INT32_MAX, description="only rounds after this one")]


class ErrorOut(Wire):
    """An error: ``detail`` says why. Some errors add a machine-readable field beside it, for clients to act on
    (each one named here; the hub sends only those that apply)."""

    detail: str
    status: str | None = Field(None, description="409 on a proposal: its status (it takes no more votes, or "
                                                  "can no longer be withdrawn)")
    run_id: int | None = Field(None, description="410 on a task: the run that ended")
    run_status: str | None = Field(None, description="410 on a task: how that run ended")
    received: int | None = Field(None, description="409 on an open-data upload: the bytes the hub holds; "
                                                   "send from that offset")
    reason: str | None = Field(None, description="410 on a withdrawn dataset version: why it was withdrawn")
    proposal_id: int | None = Field(None, description="409: the proposal that stands in the way (not passed "
                                                      "yet, already open, or decided)")
    project_id: int | None = Field(None, description="409 on a new project: the project that has its name")
    license: str | None = Field(None, description="403 on a download: the licence whose obligations to accept")
    cost: int | None = Field(None, description="402: what the action costs in credits")
    balance: int | None = Field(None, description="402: the org's credits")


class FieldError(Wire):
    loc: list[str | int] = Field(description="where: 'body', 'path' or 'query', then the field's path")
    msg: str
    type: str


class ValidationErrorOut(Wire):
    """A 422: the service's reason, or the list of fields that did not validate."""

    detail: str | list[FieldError]


class StrictJSONRequest(Request):
    """A request whose ``json()`` is :func:`consortium.strict_json.loads`: NaN, infinities, duplicate keys,
    NUL and lone surrogates in strings and deep nesting are refused (FastAPI answers 422)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json.loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """Route class of every hub router: its handler sees a :class:`StrictJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


def _field_error(error: dict[str, Any]) -> dict[str, Any]:
    """One pydantic error without its ``input`` and ``ctx`` (they may hold anything, NaN included)."""
    message = str(error.get("msg", ""))
    reason = (error.get("ctx") or {}).get("error")
    if isinstance(reason, str) and reason not in message:
        message = f"{message}: {reason}"
    loc = [part if isinstance(part, int) and not isinstance(part, bool) else str(part)
           for part in error.get("loc", ())]
    return {"loc": loc, "msg": message, "type": str(error.get("type", ""))}


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 listing where and why, never echoing the input: it renders whatever the input was."""
    return JSONResponse({"detail": [_field_error(e) for e in exc.errors()]}, status_code=422)


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("the request cannot be read (e.g. a malformed Content-Length or body)"),
    401: _error("no valid credentials: an API token or an org-signed request"),
    403: _error("authenticated, but not allowed to do this"),
    404: _error("no such thing"),
    409: _error("conflicts with the current state"),
    410: _error("no longer accepted"),
    413: _error("the request body exceeds this route's limit"),
    422: {"model": ValidationErrorOut, "description": "the request does not validate; detail says why"},
    429: {
        **_error("too many failed authentications or enrolments from this address"),
        "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
    },
}
"""What any hub route may answer besides its success (routers include it with ``responses=``)."""
