"""Forms that change things: proposing a project and an owner changing a data source's visibility and
rights. Each builds the API's own request model (:class:`ProjectCreate`, :class:`SourceRightsIn`) from the
form and calls the same service as the API route (``POST /api/projects``, ``PATCH /api/datasets/...``), so
what the API refuses the form refuses, with the message next to the field it names; a refused form changes
nothing. Neither route asks the API caller for an org signature (a steward's token is enough), so neither
form does."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from consortium import strict_json
from consortium.hub.deps import db
from consortium.hub.gate import web
from consortium.hub.services import datasets as dataset_service
from consortium.hub.services import environments as environment_service
from consortium.hub.services import projects as project_service
from consortium.hub.services.errors import ServiceError
from consortium.hub.services.source_rights import change_rights
from consortium.hub.web.catalogue import card_page
from consortium.hub.web.render import MAX_FIELD_CHARS, WebRoute, caller, login_redirect, page, posted
from consortium.hub.wire import Name
from consortium.protocol import ProjectCreate, SourceRightsIn

router = APIRouter(route_class=WebRoute, include_in_schema=False)
PROJECT_FIELDS = ("name", "task", "algorithm", "hyperparameters", "strategy", "datasets", "rounds",
                  "min_nodes", "round_timeout", "validation_fraction", "seed")
NUMBERS = ("rounds", "min_nodes", "round_timeout", "validation_fraction", "seed")
RIGHTS_FIELDS = ("visibility", "process", "download")
GRANT_WORDS = ("everyone", "members", "nobody")


def _message(text: str) -> str:
    return text.removeprefix("Value error, ")


def field_problems(error: ValidationError, where: dict[tuple[str, ...], str],
                   fallback: str) -> dict[str, str]:
    """Each pydantic error under the form field its location names (the longest prefix in ``where``; the
    whole model's under ``fallback``), a field's messages joined (a union says what each form wanted)."""
    found: dict[str, list[str]] = {}
    for item in error.errors():
        loc = tuple(str(part) for part in item["loc"])
        name = next((where[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in where), fallback)
        message = _message(item["msg"])
        if message not in found.setdefault(name, []):
            found[name].append(message)
    return {name: "; or ".join(messages) for name, messages in found.items()}


def service_problem(exc: ServiceError, where: dict[tuple[str, ...], str], fallback: str) -> dict[str, str]:
    """A service's refusal under the form field it names ("field.sub: why", the longest prefix in
    ``where``), else whole under ``fallback``."""
    name, _, message = exc.message.partition(": ")
    loc = tuple(name.split(".")) if message and " " not in name else ()
    found = next((where[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in where), None)
    return {found: message} if found is not None else {fallback: exc.message}


def _too_long(values: dict[str, str], fields: tuple[str, ...]) -> dict[str, str]:
    return {name: f"at most {MAX_FIELD_CHARS} characters" for name in fields
            if len(values.get(name, "")) > MAX_FIELD_CHARS}


def project_spec(values: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON the API would get from this form, and the problems found before validation."""
    problems: dict[str, str] = {}
    try:
        hyper = strict_json.loads(values.get("hyperparameters") or "{}")
    except ValueError as exc:
        hyper, problems["hyperparameters"] = {}, f"not valid JSON: {exc}"
    if not isinstance(hyper, dict):
        hyper, problems["hyperparameters"] = {}, "a JSON object, e.g. {\"epochs\": 1}"
    spec: dict[str, Any] = {
        "name": values.get("name", "").strip(), "task": values.get("task", "").strip(),
        "algorithm": {"name": values.get("algorithm", "").strip(), "hyperparameters": hyper},
        "datasets": [ref.strip() for ref in values.get("datasets", "").split(",") if ref.strip()],
    }
    if values.get("strategy", "").strip():
        spec["strategy"] = {"name": values["strategy"].strip()}
    for name in NUMBERS:
        if values.get(name, "").strip():
            spec[name] = values[name].strip()
    return spec, problems


WHERE = {(name,): name for name in PROJECT_FIELDS} | {
    ("algorithm",): "algorithm", ("algorithm", "name"): "algorithm",
    ("algorithm", "hyperparameters"): "hyperparameters", ("strategy",): "strategy",
    ("environments",): "datasets", ("privacy",): "name"}


def _propose_page(request: Request, session: Session, status_code: int = 200,
                  values: dict[str, str] | None = None, problems: dict[str, str] | None = None) -> Response:
    sources = dataset_service.listing(session, caller(request))
    return page(request, "propose.html", status_code=status_code, title="Propose a project",
                values=values or {"algorithm": "classifier", "hyperparameters": "{}", "rounds": "5"},
                problems=problems or {}, refs=[f"{s.org.name}/{s.name}" for s in sources])


@router.get("/projects/new")
@web
def propose_form(request: Request, session: Session = Depends(db)) -> Response:
    if caller(request) is None:
        return login_redirect(request)
    return _propose_page(request, session)


@router.post("/projects/new")
@web
async def propose(request: Request, session: Session = Depends(db)) -> Response:
    answer = await posted(request)
    if isinstance(answer, Response):
        return answer
    fields, who = answer
    values = {name: fields.get(name, "") for name in PROJECT_FIELDS}
    problems = _too_long(values, PROJECT_FIELDS)
    if not problems:
        raw, problems = project_spec(values)
        try:
            spec = ProjectCreate.model_validate(raw)
        except ValidationError as exc:
            problems = {**field_problems(exc, WHERE, "datasets"), **problems}
    if not problems:
        try:
            project = project_service.create(session, who, spec)
        except ServiceError as exc:
            session.rollback()
            about_sources = "dataset" in exc.message or "environment" in exc.message
            problems = service_problem(exc, WHERE, "datasets" if about_sources else "name")
        else:
            return RedirectResponse(f"/projects/{project.id}", status_code=303)
    return _propose_page(request, session, 422, values, problems)


def _grant(value: str) -> str | list[str] | None:
    value = value.strip()
    if not value:
        return None
    if value in GRANT_WORDS:
        return value
    return [name.strip() for name in value.split(",") if name.strip()] or value


async def _change_rights(request: Request, session: Session, kind: str, org: str, name: str) -> Response:
    answer = await posted(request)
    if isinstance(answer, Response):
        return answer
    fields, who = answer
    service = dataset_service if kind == "dataset" else environment_service
    table = dataset_service.TABLE if kind == "dataset" else environment_service.KIND
    values = {field: fields.get(field, "") for field in RIGHTS_FIELDS}
    problems = _too_long(values, RIGHTS_FIELDS)
    if not problems:
        raw = {field: _grant(values[field]) if field != "visibility" else (values[field].strip() or None)
               for field in RIGHTS_FIELDS}
        try:
            body = SourceRightsIn.model_validate(raw)
        except ValidationError as exc:
            problems = field_problems(exc, {(f,): f for f in RIGHTS_FIELDS}, "visibility")
    if not problems:
        try:
            change_rights(session, who, f"{org}/{name}", table, kind, body)
        except ServiceError as exc:
            session.rollback()
            if exc.status_code == 404:
                raise
            problems = service_problem(exc, {(f,): f for f in RIGHTS_FIELDS}, "visibility")
        else:
            return RedirectResponse(f"/{kind}s/{org}/{name}?changed=1", status_code=303)
    source = service.by_ref(session, who, f"{org}/{name}")
    return card_page(request, session, source, kind, status_code=422, problems=problems, values=values)


@router.post("/datasets/{org}/{name}/rights")
@web
async def dataset_rights(request: Request, org: Name, name: Name, session: Session = Depends(db)) -> Response:
    """The owner's change of visibility, process and download rights (what ``PATCH`` on the card does)."""
    return await _change_rights(request, session, "dataset", org, name)


@router.post("/environments/{org}/{name}/rights")
@web
async def environment_rights(request: Request, org: Name, name: Name,
                             session: Session = Depends(db)) -> Response:
    return await _change_rights(request, session, "environment", org, name)
