"""Catalogue search: datasets the caller may see, open or federated only, filtered, sorted and paged."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import ValidationError
from sqlalchemy.orm import Session

from consortium.catalogue_wire import (
    MAX_LIMIT, MAX_OFFSET, CataloguePage, CatalogueQuery, Sort, Task, Visibility,
)
from consortium.hub.deps import db, optional_principal
from consortium.hub.gate import optional
from consortium.hub.services import catalogue as service
from consortium.hub.services.errors import BadRequest
from consortium.hub.services.identity import Principal
from consortium.hub.wire import StrictJSONRoute

router = APIRouter(prefix="/api", tags=["open data"], route_class=StrictJSONRoute)
BIG = 2**62


@router.get("/catalogue", response_model=CataloguePage)
@optional
def search_catalogue(
    q: Annotated[str, Query(max_length=200)] = "",
    license: Annotated[str | None, Query(max_length=1000)] = None,
    task: Task | None = None,
    owner: Annotated[str | None, Query(max_length=63)] = None,
    open: bool | None = None,
    visibility: Visibility | None = None,
    min_rows: Annotated[int | None, Query(ge=0, le=BIG)] = None,
    max_rows: Annotated[int | None, Query(ge=0, le=BIG)] = None,
    min_bytes: Annotated[int | None, Query(ge=0, le=BIG)] = None,
    max_bytes: Annotated[int | None, Query(ge=0, le=BIG)] = None,
    sort: Sort = "newest",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    session: Session = Depends(db), caller: Principal | None = Depends(optional_principal),
):
    """Datasets the caller may see (anonymous callers: public ones) matching every filter given: words of
    the name, columns, description or datasheet (word prefixes), an SPDX licence id or expression, the task
    the card implies, the owner, open or federated only, the visibility, rows and (open) file size; one
    page at a time."""
    try:
        query = CatalogueQuery(q=q, license=license, task=task, owner=owner, open=open, visibility=visibility,
                               min_rows=min_rows, max_rows=max_rows, min_bytes=min_bytes, max_bytes=max_bytes,
                               sort=sort, limit=limit, offset=offset)
    except ValidationError as exc:
        raise BadRequest("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
    return service.search(session, caller, query)
