"""The catalogue of dataset and environment cards (search and filters) and each card's page, with its
Croissant rendering for the logged-in browser. Cards come from the same services as ``GET /api/datasets``
and ``GET /api/environments``: a card the caller may not see is a 404 page that reads as a missing one."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse, Response

from consortium.croissant import card_to_croissant
from consortium.governance.licences import LicenceError, obligations
from consortium.hub.db.models import Dataset
from consortium.hub.deps import db
from consortium.hub.gate import web
from consortium.hub.services import datasets as dataset_service
from consortium.hub.services.datasets import SourceLine
from consortium.hub.services import environments as environment_service
from consortium.hub.services import privacy_budgets
from consortium.hub.services.access import can_download_source, can_process_source, reader, source_rights
from consortium.hub.web.render import WebRoute, caller, page
from consortium.hub.wire import Name

router = APIRouter(route_class=WebRoute, include_in_schema=False)
KINDS = {"dataset": dataset_service.TABLE, "environment": environment_service.KIND}
FILTER_CHARS = 200
CHANGED = "The rights were changed (a source.rights_changed ledger entry records it)."
PAGE_SIZE = 100
"""Cards per catalogue page (a big catalogue is read a page at a time)."""


@dataclass(frozen=True)
class Filters:
    """The catalogue's search: free text (name and description), licence (part of it), owner, visibility
    and kind; an empty field does not filter."""

    text: str = ""
    licence: str = ""
    owner: str = ""
    visibility: str = ""
    kind: str = ""

    def keeps(self, source: SourceLine) -> bool:
        kind = "environment" if source.kind == environment_service.KIND else "dataset"
        return (
            (not self.text or self.text.lower() in f"{source.name} {source.description}".lower())
            and (not self.licence or self.licence.lower() in source.license.lower())
            and (not self.owner or self.owner == source.org)
            and (not self.visibility or self.visibility == source.visibility)
            and (not self.kind or self.kind == kind)
        )


def _clip(value: str | None) -> str:
    return (value or "").strip()[:FILTER_CHARS]


def grant_text(dumped: str | list[str]) -> str:
    """A grant as the rights form writes it: a keyword, or org names joined by commas."""
    return dumped if isinstance(dumped, str) else ", ".join(dumped)


def licence_obligations(licence: str) -> list[str]:
    """What data or a model under ``licence`` must honour, one sentence each (none for an unknown one)."""
    try:
        return obligations(licence).describe()
    except LicenceError:
        return []


@router.get("/catalogue")
@web
def catalogue(request: Request, text: str | None = None, licence: str | None = None, owner: str | None = None,
              visibility: str | None = None, kind: str | None = None,
              start: int = Query(0, ge=0, le=2**31 - 1), session: Session = Depends(db)) -> Response:
    who = caller(request)
    everything = dataset_service.visible_lines(session, who,
                                               (dataset_service.TABLE, environment_service.KIND))
    filters = Filters(_clip(text), _clip(licence), _clip(owner), _clip(visibility), _clip(kind))
    shown = [s for s in everything if filters.keeps(s)]
    query = urlencode({k: v for k, v in asdict(filters).items() if v})
    more = {"previous": start - PAGE_SIZE if start > 0 else None,
            "next": start + PAGE_SIZE if start + PAGE_SIZE < len(shown) else None}
    return page(request, "catalogue.html", title="Catalogue", filters=filters,
                sources=shown[start:start + PAGE_SIZE], matching=len(shown), start=start, more=more,
                query=query, total=len(everything), owners=sorted({s.org for s in everything}),
                visibilities=("public", "members", "private"), kinds=tuple(KINDS))


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
