"""Catalogue search on the wire: the filters of ``GET /api/catalogue`` and one page of its answer."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Task = Literal["classification", "regression", "unsupervised"]
Sort = Literal["newest", "name", "rows", "bytes", "published"]
Visibility = Literal["public", "members", "private"]
MAX_LIMIT = 200
MAX_OFFSET = 10_000
MAX_WORDS = 8
BIG = 2**62


class CatalogueQuery(BaseModel):
    """Which datasets to list: every filter left out keeps all; words must all match (as word prefixes)."""

    model_config = ConfigDict(extra="forbid")
    q: str = Field(default="", max_length=200, description="words of the name, columns, description or "
                                                           "datasheet (each a prefix of a word; all must match)")
    license: str | None = Field(default=None, max_length=1000, description=(
        "an SPDX id (datasets whose licence expression names it) or an expression (that exact licence)"))
    task: Task | None = Field(default=None, description="what the card's target implies")
    owner: str | None = Field(default=None, max_length=63, description="the owning org's name")
    open: bool | None = Field(default=None, description="true: a published version is not withdrawn; "
                                                        "false: federated only")
    visibility: Visibility | None = Field(default=None, description="the card's visibility (of those the "
                                                                    "caller may see)")
    min_rows: int | None = Field(default=None, ge=0, le=BIG)
    max_rows: int | None = Field(default=None, ge=0, le=BIG)
    min_bytes: int | None = Field(default=None, ge=0, le=BIG, description="open file size (open ones only)")
    max_bytes: int | None = Field(default=None, ge=0, le=BIG)
    sort: Sort = Field(default="newest", description="newest, name, rows, bytes or published (newest "
                                                     "version first)")
    limit: int = Field(default=50, ge=1, le=MAX_LIMIT)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)

    @model_validator(mode="after")
    def _bounds(self) -> CatalogueQuery:
        for low, high in (("min_rows", "max_rows"), ("min_bytes", "max_bytes")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} ({lo}) is above {high} ({hi})")
        if len(self.q.split()) > MAX_WORDS:
            raise ValueError(f"q: at most {MAX_WORDS} words")
        return self


class CatalogueItem(BaseModel):
    dataset: str = Field(description="org/name")
    org: str
    name: str
    description: str
    license: str = Field(description="the newest open version's licence; the card's when none is open")
    task: Task
    rows: int
    visibility: str
    open: bool
    latest_version: str | None = Field(description="the newest version not withdrawn")
    bytes: int | None = Field(description="that version's file size")
    published_at: datetime | None


class CataloguePage(BaseModel):
    items: list[CatalogueItem]
    next_offset: int | None = Field(description="the offset of the next page; null on the last one")
