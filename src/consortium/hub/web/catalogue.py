"""The catalogue of dataset and environment cards (search and filters) and each card's page, with its
Croissant rendering for the logged-in browser. Datasets are a page of the indexed search of
``GET /api/catalogue`` (:mod:`consortium.hub.services.catalogue`); environment cards, which that index does
not hold, come from the service of ``GET /api/environments``. A card the caller may not see is a 404 page that
reads as a missing one."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse, Response

from consortium.catalogue_wire import MAX_OFFSET, CataloguePage, CatalogueQuery, Sort, Task, Visibility
from consortium.croissant import card_to_croissant
from consortium.governance.licences import LicenceError, obligations
from consortium.hub.db.models import Dataset
from consortium.hub.deps import db
from consortium.hub.gate import web
from consortium.hub.services import catalogue as catalogue_service
from consortium.hub.services import datasets as dataset_service
from consortium.hub.services.datasets import SourceLine
from consortium.hub.services import environments as environment_service
from consortium.hub.services import privacy_budgets
from consortium.hub.services.access import can_download_source, can_process_source, reader, source_rights
from consortium.hub.services.errors import BadRequest
from consortium.hub.services.identity import Principal
from consortium.hub.web.render import WebRoute, caller, page
from consortium.hub.wire import Name

router = APIRouter(route_class=WebRoute, include_in_schema=False)
KINDS = ("dataset", "environment")
OPEN = {"": None, "open": True, "federated": False}
"""The form's open-data choices and the search's ``open`` filter for each."""
FILTER_CHARS = 200
CHANGED = "The rights were changed (a source.rights_changed ledger entry records it)."
PAGE_SIZE = 100
"""Datasets per catalogue page: one indexed search of this many rows per view."""


@dataclass(frozen=True)
class Filters:
    """The catalogue's form: words (prefixes of words), licence (an SPDX id or expression), owner, task,
    open data or not, visibility, kind and sort; an empty field does not filter."""

    text: str = ""
    licence: str = ""
    owner: str = ""
    task: str = ""
    open: str = ""
    visibility: str = ""
    kind: str = ""
    sort: str = ""

    def query(self, start: int) -> CatalogueQuery:
        """The dataset search at offset ``start`` (ValidationError: a value the search refuses)."""
        return CatalogueQuery.model_validate({
            "q": self.text, "license": self.licence or None, "owner": self.owner or None,
            "task": self.task or None, "open": OPEN.get(self.open, self.open),
            "visibility": self.visibility or None, "sort": self.sort or "newest", "limit": PAGE_SIZE,
            "offset": start})

    def keeps(self, environment: SourceLine) -> bool:
        """Whether an environment card matches, as the search matches a dataset (BadRequest: a bad licence);
        environments have no task and are never open data."""
        return (not self.task and not self.open
                and catalogue_service.words_keep(self.text, environment.name, environment.description)
                and (not self.licence or catalogue_service.licence_keeps(self.licence, environment.license))
                and (not self.owner or self.owner == environment.org)
                and (not self.visibility or self.visibility == environment.visibility))


def _clip(value: str | None) -> str:
    return (value or "").strip()[:FILTER_CHARS]


def _refusal(exc: ValidationError) -> str:
    """A refused search in the form's words, one sentence per field."""
    return "; ".join(": ".join(filter(None, (".".join(map(str, e["loc"])),
                                             e["msg"].removeprefix("Value error, ")))) for e in exc.errors())


def _datasets(session: Session, who: Principal | None, filters: Filters, start: int) -> CataloguePage:
    """One page of the dataset search (BadRequest: a filter it refuses, said in the form's words)."""
    try:
        query = filters.query(start)
    except ValidationError as exc:
        raise BadRequest(_refusal(exc)) from None
    return catalogue_service.search(session, who, query)


@router.get("/catalogue")
@web
def catalogue(request: Request, text: str | None = None, licence: str | None = None, owner: str | None = None,
              task: str | None = None, open: str | None = None, visibility: str | None = None,
              kind: str | None = None, sort: str | None = None,
              start: int = Query(0, ge=0, le=2**31 - 1), session: Session = Depends(db)) -> Response:
    who = caller(request)
    filters = Filters(*(_clip(v) for v in (text, licence, owner, task, open, visibility, kind, sort)))
    environments = dataset_service.visible_lines(session, who, (environment_service.KIND,))
    found, shown, message = CataloguePage(items=[], next_offset=None), [], None
    try:
        if filters.kind not in ("", *KINDS):
            raise BadRequest("kind: dataset or environment")
        if filters.kind in ("", "dataset"):
            found = _datasets(session, who, filters, start)
        if filters.kind in ("", "environment") and start == 0:
            shown = [e for e in environments if filters.keeps(e)]
    except BadRequest as exc:
        message = exc.message
    query = urlencode({k: v for k, v in asdict(filters).items() if v})
    more = {"previous": max(start - PAGE_SIZE, 0) if start > 0 else None,
            "next": found.next_offset if found.next_offset is not None and found.next_offset <= MAX_OFFSET
            else None}
    owners = sorted(set(catalogue_service.owners(session, who)) | {e.org for e in environments})
    return page(request, "catalogue.html", title="Catalogue", filters=filters, datasets=found.items,
                environments=shown, start=start, more=more, query=query, message=message, owners=owners,
                tasks=get_args(Task), visibilities=get_args(Visibility), kinds=KINDS, sorts=get_args(Sort),
                searched_datasets=filters.kind in ("", "dataset"))


def grant_text(dumped: str | list[str]) -> str:
    """A grant as the rights form writes it: a keyword, or org names joined by commas."""
    return dumped if isinstance(dumped, str) else ", ".join(dumped)


def licence_obligations(licence: str) -> list[str]:
    """What data or a model under ``licence`` must honour, one sentence each (none for an unknown one)."""
    try:
        return obligations(licence).describe()
    except LicenceError:
        return []


def card_page(request: Request, session: Session, source: Dataset, noun: str, status_code: int = 200,
              problems: dict[str, str] | None = None, values: dict[str, str] | None = None,
              notice: str | None = None) -> Response:
    """A card's page; its owner's stewards also get the rights form (``problems``/``values``: a refused
    change, shown next to its fields)."""
    principal = caller(request)
    who = reader(session, principal)
    rights = source_rights(source)
    shown = {"visibility": rights.visibility.value, "process": grant_text(rights.process.dump()),
             "download": grant_text(rights.download.dump())}
    may_change = (principal is not None and principal.org_id == source.org_id
                  and principal.acts_for(source.org_id))
    return page(
        request, "source.html", status_code=status_code, title=f"{source.org.name}/{source.name}",
        source=source, noun=noun, may_change=may_change, problems=problems or {}, values=values or shown,
        notice=notice,
        rights={"visibility": rights.visibility, "process": rights.process.dump(),
                "download": rights.download.dump()},
        may_process=can_process_source(who, source), may_download=can_download_source(who, source),
        obligations=licence_obligations(source.license),
        croissant=f"/datasets/{source.org.name}/{source.name}/croissant.json" if noun == "dataset" else None,
        budget=privacy_budget(session, source),
    )


def privacy_budget(session: Session, source: Dataset) -> dict[str, float] | None:
    """The dataset's privacy budget with the epsilon spent and left (what its API card gives); None without
    one."""
    budget = privacy_budgets.budget_of(source)
    if budget is None:
        return None
    spent, left = privacy_budgets.spent_and_left(session, source)
    return {"epsilon": budget.epsilon, "delta": budget.delta, "spent": spent, "left": left}


@router.get("/datasets/{org}/{name}")
@web
def dataset_card(request: Request, org: Name, name: Name, changed: int = 0,
                 session: Session = Depends(db)) -> Response:
    source = dataset_service.by_ref(session, caller(request), f"{org}/{name}")
    return card_page(request, session, source, "dataset", notice=CHANGED if changed else None)


@router.get("/datasets/{org}/{name}/croissant.json")
@web
def dataset_croissant(request: Request, org: Name, name: Name, session: Session = Depends(db)) -> Response:
    """The card as Croissant JSON-LD (what ``GET /api/datasets/{org}/{name}/croissant`` gives)."""
    card = dataset_service.to_out(dataset_service.by_ref(session, caller(request), f"{org}/{name}"))
    url = str(request.url_for("dataset_card", org=org, name=name))
    download = f'attachment; filename="{org}-{name}.croissant.json"'
    return JSONResponse(card_to_croissant(card, org=org, url=url), headers={"Content-Disposition": download})


@router.get("/environments/{org}/{name}")
@web
def environment_card(request: Request, org: Name, name: Name, changed: int = 0,
                     session: Session = Depends(db)) -> Response:
    source = environment_service.by_ref(session, caller(request), f"{org}/{name}")
    return card_page(request, session, source, "environment", notice=CHANGED if changed else None)
