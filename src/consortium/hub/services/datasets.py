"""Dataset cards: metadata published by an org about data that stays on its node."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session, joinedload, object_session

from consortium.hub.db.models import Dataset, Org
from consortium.hub.services import ledger, licensing, privacy_budgets
from consortium.governance import permissions
from consortium.governance.permissions import MEMBERS, NOBODY, Rights
from consortium.hub.services.access import can_see_source, grant_of, reader, source_rights
from consortium.hub.services.errors import Conflict, Forbidden, NotFound
from consortium.hub.services.identity import Principal
from consortium.protocol import DatasetCardIn, DatasetCardOut

TABLE = "table"
"""The ``kind`` of a data source that is rows of data (the other kind is an RL environment)."""


def register(session: Session, actor: Principal, card: DatasetCardIn) -> Dataset:
    """Publish a card for the caller's own org (its key, or one of its stewards), its licence checked and
    stored in its canonical SPDX spelling."""
    if actor.org_id is None or not actor.acts_for(actor.org_id):
        raise Forbidden("only an organisation's node or steward can register its datasets")
    if session.scalar(select(Dataset).where(Dataset.org_id == actor.org_id, Dataset.name == card.name)):
        raise Conflict(f"{actor.org_name}/{card.name} already exists; pick another name")
    licence = licensing.normalised("license", card.license)
    dataset = Dataset(
        org_id=actor.org_id,
        name=card.name,
        description=card.description,
        schema=card.schema_.model_dump(),
        rows=card.rows,
        sha256=card.sha256,
        license=licence,
        visibility=card.visibility.value,
        file_format=card.file_format,
    )
    privacy_budgets.store_budget(dataset, card.privacy_budget)
    session.add(dataset)
    session.flush()
    ledger.record(
        session,
        "dataset.registered",
        actor.label,
        {"dataset": f"{actor.org_name}/{card.name}", "sha256": card.sha256, "license": licence,
         "rows": card.rows}
        | ({"privacy_budget": card.privacy_budget.model_dump()} if card.privacy_budget is not None else {}),
        scope=ledger.source_scope(dataset.id),
    )
    session.commit()
    return dataset


def source_by_ref(session: Session, actor: Principal | None, ref: str, kind: str, noun: str) -> Dataset:
    """The data source 'org/name' of ``kind``; one the caller (None: anonymous) may not see is reported as
    missing (404)."""
    org_name, _, name = ref.partition("/")
    source = session.scalar(
        select(Dataset).join(Org).where(Org.name == org_name, Dataset.name == name, Dataset.kind == kind)
    )
    if source is None or not can_see_source(reader(session, actor), source):
        raise NotFound(f"no {noun} {ref!r}")
    return source


def sources_listing(session: Session, actor: Principal | None, kind: str) -> list[Dataset]:
    """Every data source of ``kind`` the caller (None: anonymous) may see, oldest first."""
    who = reader(session, actor)
    rows = session.scalars(select(Dataset).where(Dataset.kind == kind).order_by(Dataset.id)
                           .options(joinedload(Dataset.org)))
    return [d for d in rows if can_see_source(who, d)]


@dataclass(frozen=True)
class SourceLine:
    """A data source's line in a list (the catalogue's columns), read without building the ORM object."""

    id: int
    kind: str
    org: str
    name: str
    description: str
    license: str
    visibility: str
    rows: int


def _visible_rows(session: Session, actor: Principal | None, kinds: tuple[str, ...],
                  *columns: Any) -> Iterator[Row]:
    """The ``columns`` of every data source of ``kinds`` the caller may see (the rule of
    :func:`sources_listing`), oldest first, in one query of plain columns."""
    who = reader(session, actor)
    rows = session.execute(
        select(Org.name, Dataset.visibility, Dataset.process_grant, Dataset.download_grant, *columns)
        .join(Org, Org.id == Dataset.org_id).where(Dataset.kind.in_(kinds)).order_by(Dataset.id)
    )
    for row in rows:
        rights = Rights(row[1], grant_of(row[2], MEMBERS), grant_of(row[3], NOBODY))
        if permissions.can_see(who, row[0], rights):
            yield row


def visible_count(session: Session, actor: Principal | None, kind: str) -> int:
    """How many data sources of ``kind`` the caller may see (``len`` of :func:`listing`, without the rows)."""
    return sum(1 for _ in _visible_rows(session, actor, (kind,)))


def visible_lines(session: Session, actor: Principal | None, kinds: tuple[str, ...]) -> list[SourceLine]:
    """:class:`SourceLine` of every data source of ``kinds`` the caller may see, by kind then oldest first."""
    found = [SourceLine(row[4], row[5], row[0], row[6], row[7], row[8], row[1], row[9])
             for row in _visible_rows(session, actor, kinds, Dataset.id, Dataset.kind, Dataset.name,
                                      Dataset.description, Dataset.license, Dataset.rows)]
    return sorted(found, key=lambda line: kinds.index(line.kind))


def by_ref(session: Session, actor: Principal | None, ref: str) -> Dataset:
    """The dataset 'org/name'; a dataset the caller may not see is reported as missing (404)."""
    return source_by_ref(session, actor, ref, TABLE, "dataset")


def listing(session: Session, actor: Principal | None) -> list[Dataset]:
    return sources_listing(session, actor, TABLE)


def to_out(dataset: Dataset) -> DatasetCardOut:
    rights = source_rights(dataset)
    spent, left = privacy_budgets.spent_and_left(object_session(dataset), dataset)
    budget = privacy_budgets.budget_of(dataset)
    return DatasetCardOut(
        id=dataset.id,
        org=dataset.org.name,
        name=dataset.name,
        description=dataset.description,
        schema=dataset.schema,
        rows=dataset.rows,
        sha256=dataset.sha256,
        license=dataset.license,
        visibility=dataset.visibility,
        file_format=dataset.file_format,
        created_at=dataset.created_at,
        process=rights.process.dump(),
        download=rights.download.dump(),
        privacy_budget=None if budget is None else {"epsilon": budget.epsilon, "delta": budget.delta},
        privacy_spent=spent,
        privacy_left=left,
    )
