"""Catalogue search over every dataset the caller may see, open or federated only, in indexed SQL.

The rows come from the index of :mod:`consortium.hub.db.catalogue_models` (kept current by mapper events).
Visibility is the rule of :func:`consortium.governance.permissions.can_see` for data sources (which carry
no audience) written as a WHERE clause: public ones for everybody, the caller's org's own, and ``members``
ones for member orgs and the admin. Words and licence ids are prefix/equality scans of the term index; one
page is read (``limit + 1`` rows, to know whether another follows) and only its rows are joined to their
cards and orgs.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.orm import Session

from consortium.catalogue_wire import CatalogueItem, CataloguePage, CatalogueQuery
from consortium.hub.db.catalogue_models import LICENCE, WORD, CatalogueEntry, CatalogueTerm, licence_ids, words
from consortium.hub.db.models import Dataset, Org
from consortium.hub.services import licensing
from consortium.hub.services.access import reader
from consortium.hub.services.identity import Principal

E = CatalogueEntry


def visible(session: Session, actor: Principal | None) -> ColumnElement[bool]:
    """The WHERE clause of the entries the caller (None: anonymous) may see."""
    who = reader(session, actor)
    shown = ["public", "members"] if who.is_member or who.is_admin else ["public"]
    clause = E.visibility.in_(shown)
    if actor is not None and actor.org_id is not None:
        clause = or_(clause, E.org_id == actor.org_id)
    return clause


def _has_term(*where: ColumnElement[bool]) -> ColumnElement[bool]:
    return E.dataset_id.in_(select(CatalogueTerm.dataset_id).where(*where))


def _prefix(term: str) -> ColumnElement[bool]:
    """Entries with a term starting with ``term`` (terms are [0-9a-z] after their kind): a range scan."""
    return _has_term(CatalogueTerm.term >= term, CatalogueTerm.term < term[:-1] + chr(ord(term[-1]) + 1))


def _licence_id(canonical: str) -> str | None:
    """The one SPDX id a (canonical) licence filter is, whose datasets are those naming it; None for an
    expression, which matches that exact licence."""
    ids = licence_ids(canonical)
    return next(iter(ids)) if len(ids) == 1 and " " not in canonical.strip("() ") else None


def _licence(expr: str) -> ColumnElement[bool]:
    canonical = licensing.normalised("license", expr)
    spdx = _licence_id(canonical)
    return E.license == canonical if spdx is None else _has_term(CatalogueTerm.term == LICENCE + spdx)


def licence_keeps(expr: str, licence: str) -> bool:
    """Whether the licence filter ``expr`` keeps a card under ``licence``, as the search does (BadRequest: an
    unknown id or bad syntax): for a card outside the index (an environment)."""
    canonical = licensing.normalised("license", expr)
    spdx = _licence_id(canonical)
    return licence == canonical if spdx is None else spdx in licence_ids(licence)


def words_keep(q: str, *texts: str) -> bool:
    """Whether every word of ``q`` begins a word of ``texts``, as the search matches its words."""
    found = words(texts)
    return all(any(w.startswith(word) for w in found) for word in words([q]))


def _filters(session: Session, actor: Principal | None, query: CatalogueQuery) -> list[ColumnElement[bool]]:
    where = [visible(session, actor)]
    where += [_prefix(WORD + word) for word in words([query.q])]
    if query.license:
        where.append(_licence(query.license))
    if query.owner:
        where.append(E.org_id == select(Org.id).where(Org.name == query.owner).scalar_subquery())
    for column, value in ((E.task, query.task), (E.open, query.open), (E.visibility, query.visibility)):
        if value is not None:
            where.append(column == value)
    for column, low, high in ((E.rows, query.min_rows, query.max_rows),
                              (E.bytes, query.min_bytes, query.max_bytes)):
        if low is not None:
            where.append(column >= low)
        if high is not None:
            where.append(column <= high)
    return where


def _ordered(statement: Select, sort: str) -> Select:
    if sort == "name":
        return statement.order_by(E.name, E.dataset_id)
    if sort == "newest":
        return statement.order_by(E.dataset_id.desc())
    if sort == "rows":
        return statement.order_by(E.rows.desc(), E.dataset_id.desc())
    column = {"bytes": E.bytes, "published": E.published_at}[sort]
    # open ones first: NULL bytes / publication times are exactly the federated-only rows, after them
    return statement.order_by(E.open.desc(), column.desc(), E.dataset_id.desc())


def owners(session: Session, actor: Principal | None) -> list[str]:
    """The names of the orgs owning a dataset the caller may see, by name (one query; no card is read)."""
    shown = select(E.dataset_id).where(E.org_id == Org.id, visible(session, actor)).exists()
    return list(session.scalars(select(Org.name).where(shown).order_by(Org.name)))


def search(session: Session, actor: Principal | None, query: CatalogueQuery) -> CataloguePage:
    """One page of the datasets the caller may see that match every filter of ``query``."""
    statement = _ordered(select(*E.__table__.c).where(and_(*_filters(session, actor, query))), query.sort)
    entries = list(session.execute(statement.limit(query.limit + 1).offset(query.offset)))
    more = len(entries) > query.limit
    entries = entries[:query.limit]
    cards = {row.id: row for row in session.execute(
        select(Dataset.id, Dataset.description, Org.name.label("org")).join(Org, Org.id == Dataset.org_id)
        .where(Dataset.id.in_([e.dataset_id for e in entries])))}
    items = [CatalogueItem(dataset=f"{cards[e.dataset_id].org}/{e.name}", org=cards[e.dataset_id].org,
                           name=e.name, description=cards[e.dataset_id].description, license=e.license,
                           task=e.task, rows=e.rows, visibility=e.visibility, open=e.open,
                           latest_version=e.latest_version, bytes=e.bytes, published_at=e.published_at)
             for e in entries]
    return CataloguePage(items=items, next_offset=query.offset + query.limit if more else None)
