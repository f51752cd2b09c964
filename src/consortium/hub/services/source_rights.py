"""Owners change who may see, process and download their data sources (datasets and environments).

Only the owner org's key or one of its stewards may; any other caller hears that the source does not exist
(404), a researcher of the owner org that it may not (403). Each change is a ``source.rights_changed`` ledger
entry, scoped to the source, with the rights before and after. Rights are checked when a project is
proposed, so projects proposed (and approved, or running) before a change keep working under the rights
they were proposed under; models trained on the source follow it (``model_access``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.governance.permissions import Grant, Rights
from consortium.hub.db.models import Dataset, Org
from consortium.hub.services import ledger
from consortium.hub.services.access import source_rights
from consortium.hub.services.datasets import source_by_ref
from consortium.hub.services.errors import BadRequest, Forbidden, NotFound
from consortium.hub.services.identity import Principal
from consortium.protocol import GrantValue, SourceRightsIn


def dumped(rights: Rights) -> dict[str, Any]:
    """The stored form of a source's rights, as cards and ledger entries show them."""
    return {"visibility": rights.visibility.value, "process": rights.process.dump(),
            "download": rights.download.dump()}


def _grant(session: Session, field: str, value: GrantValue | None, current: Grant) -> Grant:
    """The grant ``value`` asks for (``current`` when left out); BadRequest naming the field and any org the
    hub does not know."""
    if value is None:
        return current
    grant = Grant.load(value)
    if field == "process" and grant.everyone:
        raise BadRequest("process: 'everyone' is only for download; training needs a member org: use "
                         "'members'")
    if grant.orgs:
        known = set(session.scalars(select(Org.name).where(Org.name.in_(grant.orgs))))
        unknown = sorted(grant.orgs - known)
        if unknown:
            raise BadRequest(f"{field}: no organisation named {', '.join(map(repr, unknown))}")
    return grant


def change_rights(
    session: Session, actor: Principal, ref: str, kind: str, noun: str, body: SourceRightsIn
) -> Dataset:
    """Set the visibility and grants ``body`` names on the source 'org/name' of ``kind``; the source."""
    source = source_by_ref(session, actor, ref, kind, noun)
    if actor.org_id != source.org_id:
        raise NotFound(f"no {noun} {ref!r}")
    if not actor.acts_for(source.org_id):
        raise Forbidden(f"only {source.org.name}'s key or stewards may change the rights of {ref}")
    if body.visibility is None and body.process is None and body.download is None:
        raise BadRequest("give at least one of visibility, process, download")
    ledger.lock(session)  # concurrent changes are recorded one after the other, each with its true "old"
    session.refresh(source)
    old = source_rights(source)
    new = Rights(body.visibility or old.visibility, _grant(session, "process", body.process, old.process),
                 _grant(session, "download", body.download, old.download))
    if new == old:
        return source
    source.visibility = new.visibility.value
    source.process_grant, source.download_grant = new.process.dump(), new.download.dump()
    ledger.record(session, "source.rights_changed", actor.label,
                  {"source": ref, "kind": kind, "old": dumped(old), "new": dumped(new)},
                  scope=ledger.source_scope(source.id))
    session.commit()
    return source

