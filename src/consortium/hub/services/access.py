"""Who may see what: the hub's object-level read rules, over the pure rules of
:mod:`consortium.governance.permissions` (the one source of truth for visibility and rights).

- Data sources (dataset and environment cards): :func:`can_see_source`, :func:`can_process_source` and
  :func:`can_download_source` apply ``permissions`` to :func:`source_rights` (the card's visibility and its
  stored grants) for the caller's :func:`reader`. Anonymous callers (``None``) see public cards.
- Projects, and with them their runs and progress: only their participants, that is the admin, the proposer,
  and any principal (key, steward, researcher) of an org that owns a data source in the project or that the
  proposer belongs to. Models: :mod:`consortium.hub.services.model_access`.
- Ledger entries: the payload of an entry scoped to a project or data source only to those who may see it.

Services report an object the caller may not see as missing (:class:`NotFound`), so its existence is not
leaked either. A principal of an org that is not admitted cannot authenticate (``identity``), so an org's
principals are members; :func:`reader` still reads the org's status.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.governance import permissions
from consortium.governance.permissions import MEMBERS, NOBODY, Grant, Reader, Rights
from consortium.hub.db.models import Dataset, LedgerEntry, Org, Project, ProjectDataset, User
from consortium.hub.services.errors import NotFound
from consortium.hub.services.identity import Principal
from consortium.protocol import Role

ADMITTED = "admitted"


def is_admin(actor: Principal | None) -> bool:
    return actor is not None and actor.kind == "user" and actor.role == Role.admin


def reader(session: Session, actor: Principal | None) -> Reader:
    """The caller as ``permissions`` sees it: its org (None for anonymous callers and users without an org),
    whether that org is a member (admitted), and whether it is the admin."""
    if actor is None:
        return permissions.ANONYMOUS
    if actor.org_id is None:
        return Reader(None, is_admin=is_admin(actor))
    org = session.get(Org, actor.org_id)
    return Reader(org.name, is_member=org.status == ADMITTED, is_admin=is_admin(actor))


def grant_of(stored: object, default: Grant) -> Grant:
    """The grant of a stored ``Grant.dump()`` value (NULL: ``default``)."""
    return default if stored is None else Grant.load(stored)


def source_rights(source: Dataset) -> Rights:
    """A data source's rights: its visibility; process by every member and download by nobody but the
    owner unless its owner stored other grants."""
    return Rights(source.visibility, grant_of(source.process_grant, MEMBERS),
                  grant_of(source.download_grant, NOBODY))


def can_see_source(who: Reader, source: Dataset) -> bool:
    """Whether ``who`` may see the card (and its Croissant rendering)."""
    return permissions.can_see(who, source.org.name, source_rights(source))


def can_process_source(who: Reader, source: Dataset) -> bool:
    """Whether ``who``'s org may name the source in a project it proposes."""
    return permissions.can_process(who, source.org.name, source_rights(source))


def can_download_source(who: Reader, source: Dataset) -> bool:
    """Whether ``who`` may download the source (no route serves a data source's rows; models inherit it)."""
    return permissions.can_download(who, source.org.name, source_rights(source))


@dataclass(frozen=True)
class Parties:
    """Who takes part in a project: its proposer's label and the ids of the participating orgs (the data
    owners and the proposer's org)."""

    proposer: str
    org_ids: frozenset[int]


def takes_part(actor: Principal | None, parties: Parties) -> bool:
    if actor is None:
        return False
    return is_admin(actor) or actor.label == parties.proposer or (
        actor.org_id is not None and actor.org_id in parties.org_ids
    )


def _proposer_orgs(session: Session, proposers: Iterable[str]) -> dict[str, int]:
    """The org of each proposer label (``user:NAME`` or ``org:NAME``) that has one."""
    kinds: dict[str, set[str]] = {"user": set(), "org": set()}
    for label in proposers:
        kind, _, name = label.partition(":")
        if kind in kinds:
            kinds[kind].add(name)
    found: dict[str, int] = {}
    if kinds["user"]:
        for name, org_id in session.execute(
            select(User.name, User.org_id).where(User.name.in_(kinds["user"]), User.org_id.is_not(None))
        ):
            found[f"user:{name}"] = org_id
    if kinds["org"]:
        for name, org_id in session.execute(select(Org.name, Org.id).where(Org.name.in_(kinds["org"]))):
            found[f"org:{name}"] = org_id
    return found


def parties(session: Session, project_ids: Iterable[int]) -> dict[int, Parties]:
    """The :class:`Parties` of each existing project of ``project_ids`` (three queries, however many)."""
    ids = set(project_ids)
    if not ids:
        return {}
    proposers = dict(session.execute(select(Project.id, Project.proposer).where(Project.id.in_(ids))).all())
    owners: dict[int, set[int]] = {project_id: set() for project_id in proposers}
    for project_id, org_id in session.execute(
        select(ProjectDataset.project_id, Dataset.org_id)
        .join(Dataset, Dataset.id == ProjectDataset.dataset_id)
        .where(ProjectDataset.project_id.in_(ids))
    ):
        owners[project_id].add(org_id)
    proposer_orgs = _proposer_orgs(session, proposers.values())
    return {
        project_id: Parties(proposer, frozenset(owners[project_id] | (
            {proposer_orgs[proposer]} if proposer in proposer_orgs else set()
        )))
        for project_id, proposer in proposers.items()
    }


def can_see_project(session: Session, actor: Principal, project: Project) -> bool:
    if is_admin(actor):
        return True
    found = parties(session, [project.id]).get(project.id)
    return found is not None and takes_part(actor, found)


def visible_project(session: Session, actor: Principal, project_id: int) -> Project:
    """The project, or NotFound when it does not exist or the caller takes no part in it."""
    project = session.get(Project, project_id)
    if project is None or not can_see_project(session, actor, project):
        raise NotFound(f"no project {project_id}")
    return project


def visible_projects(session: Session, actor: Principal) -> list[Project]:
    """The projects the caller takes part in (the admin: all), oldest first."""
    projects = list(session.scalars(select(Project).order_by(Project.id)))
    if is_admin(actor):
        return projects
    known = parties(session, [p.id for p in projects])
    return [p for p in projects if takes_part(actor, known[p.id])]


def ledger_reader(
    session: Session, actor: Principal, entries: Iterable[LedgerEntry]
) -> Callable[[LedgerEntry], bool]:
    """Whether the caller may read the payload of each of ``entries`` (decided from their scope now, so a
    project's new participants read its whole history); an entry whose scoped object is gone is redacted."""
    entries = list(entries)
    project_ids = {e.project_id for e in entries if e.project_id is not None}
    source_ids = {e.dataset_id for e in entries if e.dataset_id is not None}
    in_project = {pid for pid, found in parties(session, project_ids).items() if takes_part(actor, found)}
    sources = session.scalars(select(Dataset).where(Dataset.id.in_(source_ids))) if source_ids else []
    who = reader(session, actor)
    seen_sources = {s.id for s in sources if can_see_source(who, s)}

    def readable(entry: LedgerEntry) -> bool:
        if entry.project_id is not None and entry.project_id not in in_project:
            return False
        return entry.dataset_id is None or entry.dataset_id in seen_sources

    return readable
