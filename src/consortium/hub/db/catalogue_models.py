"""The catalogue's search index: one row per dataset (its searchable facts, open or federated-only) and an
inverted index of words and licence ids, kept in step with ``datasets`` and ``open_data_versions`` by mapper
events, so every way a card is registered, changed, published or withdrawn updates it in the same flush.

:func:`entry_for` is pure (the bench builds big indexes with it); :func:`refresh` reads one dataset and its
newest version not withdrawn through the flushing connection and rewrites that dataset's rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger, Boolean, Connection, ForeignKey, Index, Integer, String, delete, event, insert, select,
)
from sqlalchemy.orm import Mapped, mapped_column

from consortium.hub.db.models import Base, Dataset
from consortium.hub.db.open_data_models import OpenDataVersion

TABLE_KIND = "table"
TASKS = ("classification", "regression", "unsupervised")
TERM_CHARS = 60
MAX_TERMS = 256
"""The most distinct words one dataset puts in the index (its name's, then its columns', description's...)."""
WORD = "w:"
LICENCE = "l:"
_WORDS = re.compile(r"[0-9a-z]+")
_LICENCE_TOKENS = re.compile(r"[^\s()]+")
_OPERATORS = {"and", "or", "with"}


class CatalogueEntry(Base):
    """A dataset's searchable facts: owner, visibility, task, size, licence and whether it is open. Each sort
    has an index in its order (the open ones first for bytes and publication time, whose NULLs are exactly
    the federated-only rows), so a page is read off an index walk."""

    __tablename__ = "catalogue_entries"
    __table_args__ = (Index("ix_catalogue_entries_name", "name", "dataset_id"),
                      Index("ix_catalogue_entries_rows", "rows", "dataset_id"),
                      Index("ix_catalogue_entries_open_published", "open", "published_at", "dataset_id"),
                      Index("ix_catalogue_entries_open_bytes", "open", "bytes", "dataset_id"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), primary_key=True, autoincrement=False)
    org_id: Mapped[int] = mapped_column(Integer, index=True)
    name: Mapped[str] = mapped_column(String(63))
    visibility: Mapped[str] = mapped_column(String(20), index=True)
    task: Mapped[str] = mapped_column(String(20), index=True)
    rows: Mapped[int] = mapped_column(BigInteger)
    license: Mapped[str] = mapped_column(String(1000))
    """The newest open version's licence; the card's while nothing is open."""
    open: Mapped[bool] = mapped_column(Boolean)
    """Whether a published version is not withdrawn."""
    latest_version: Mapped[str | None] = mapped_column(String(32))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    """The newest open version's file size; None while nothing is open."""
    published_at: Mapped[datetime | None]


class CatalogueTerm(Base):
    """A word (``w:``) of a dataset's name, columns, description or datasheet, or an SPDX id (``l:``) of its
    card's or open version's licence, lower case: prefix searches are index range scans."""

    __tablename__ = "catalogue_terms"
    __table_args__ = (Index("ix_catalogue_terms_dataset_term", "dataset_id", "term"),)
    term: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), primary_key=True)


def task_of(schema: Mapping[str, Any]) -> str:
    """The learning task a card's schema implies: no target unsupervised, a float target regression, any
    other target (integers, booleans, strings) classification."""
    target = schema.get("target")
    if not target:
        return "unsupervised"
    return "regression" if str(target.get("dtype", "")).startswith("float") else "classification"


def licence_ids(expr: str) -> set[str]:
    """The lower-case SPDX ids (and exceptions) an expression names."""
    return {token.lower() for token in _LICENCE_TOKENS.findall(expr) if token.lower() not in _OPERATORS}


def words(texts: Iterable[str]) -> list[str]:
    """The distinct lower-case words of ``texts`` in order of appearance, at most :data:`MAX_TERMS`."""
    found: dict[str, None] = {}
    for text in texts:
        for word in _WORDS.findall(text.lower()):
            found.setdefault(word[:TERM_CHARS])
            if len(found) >= MAX_TERMS:
                return list(found)
    return list(found)


def entry_for(dataset: Mapping[str, Any], latest: Mapping[str, Any] | None) -> tuple[dict, list[str]]:
    """The index row and terms of a dataset (``id, org_id, name, description, schema, rows, license,
    visibility``) whose newest open version is ``latest`` (``version, size, license, published_at,
    datasheet``; None: federated only)."""
    schema = dataset["schema"] or {}
    columns = [c["name"] for c in schema.get("features", ())] + ([schema["target"]["name"]]
                                                                  if schema.get("target") else [])
    sheet = list((latest or {}).get("datasheet", {}).values())
    licence = latest["license"] if latest else dataset["license"]
    entry = {"dataset_id": dataset["id"], "org_id": dataset["org_id"], "name": dataset["name"],
             "visibility": dataset["visibility"], "task": task_of(schema), "rows": dataset["rows"],
             "license": licence, "open": latest is not None,
             "latest_version": latest["version"] if latest else None,
             "bytes": latest["size"] if latest else None,
             "published_at": latest["published_at"] if latest else None}
    terms = [WORD + w for w in words([dataset["name"], " ".join(columns),
                                      dataset["description"] or "", *sheet])]
    terms += [LICENCE + i for i in sorted(licence_ids(dataset["license"]) | licence_ids(licence))]
    return entry, terms


def refresh(connection: Connection, dataset_id: int) -> None:
    """Rewrite the index rows of one dataset from the tables (none for a data source that is not a table)."""
    connection.execute(delete(CatalogueTerm).where(CatalogueTerm.dataset_id == dataset_id))
    connection.execute(delete(CatalogueEntry).where(CatalogueEntry.dataset_id == dataset_id))
    d = Dataset.__table__.c
    row = connection.execute(select(d.id, d.org_id, d.name, d.description, d.schema, d.rows, d.license,
                                    d.visibility, d.kind).where(d.id == dataset_id)).mappings().first()
    if row is None or row["kind"] != TABLE_KIND:
        return
    v = OpenDataVersion.__table__.c
    latest = connection.execute(select(v.version, v.size, v.license, v.published_at, v.datasheet)
                                .where(v.dataset_id == dataset_id, v.withdrawn_at.is_(None))
                                .order_by(v.id.desc()).limit(1)).mappings().first()
    entry, terms = entry_for(row, latest)
    connection.execute(insert(CatalogueEntry), [entry])
    if terms:
        connection.execute(insert(CatalogueTerm), [{"term": t, "dataset_id": dataset_id} for t in terms])


def refresh_all(connection: Connection) -> None:
    """Rebuild the whole index (a migration; the index is derived, so this loses nothing)."""
    for dataset_id in connection.scalars(select(Dataset.__table__.c.id)).all():
        refresh(connection, dataset_id)


@event.listens_for(Dataset, "after_insert")
@event.listens_for(Dataset, "after_update")
def _dataset_changed(_mapper: Any, connection: Connection, target: Dataset) -> None:
    refresh(connection, target.id)


@event.listens_for(Dataset, "before_delete")
def _dataset_deleted(_mapper: Any, connection: Connection, target: Dataset) -> None:
    connection.execute(delete(CatalogueTerm).where(CatalogueTerm.dataset_id == target.id))
    connection.execute(delete(CatalogueEntry).where(CatalogueEntry.dataset_id == target.id))


@event.listens_for(OpenDataVersion, "after_insert")
@event.listens_for(OpenDataVersion, "after_update")
def _version_changed(_mapper: Any, connection: Connection, target: OpenDataVersion) -> None:
    refresh(connection, target.dataset_id)

