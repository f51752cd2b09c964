"""Owners change a data source's visibility and grants, on SQLite and PostgreSQL: only the owner's key or
stewards, unknown orgs named, one ledger entry with the rights before and after, nothing half-written."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from consortium.hub.db.models import Dataset, Org
from consortium.hub.services import datasets, environments, ledger
from consortium.hub.services.errors import BadRequest, Forbidden, NotFound
from consortium.hub.services.identity import Principal
from consortium.hub.services.source_rights import change_rights
from consortium.protocol import Role, SourceRightsIn


SCHEMA = {"features": [{"name": "x", "dtype": "float32"}], "target": None}


def key(org: Org) -> Principal:
    return Principal("org", org.name, Role.steward, org.id, org.name)


def user(name: str, role: Role, org: Org | None) -> Principal:
    return Principal("user", name, role, org.id if org else None, org.name if org else None)


@pytest.fixture
def orgs(session: Session) -> dict[str, Org]:
    found = {name: Org(name=name) for name in ("north", "south", "east")}
    session.add_all(found.values())
    session.flush()
    for name, kind in [("digits", datasets.TABLE), ("arena", environments.KIND)]:
        session.add(Dataset(org_id=found["north"].id, name=name, kind=kind, schema=SCHEMA, rows=7,
                            sha256="0" * 64, license="MIT", visibility="members", file_format="csv"))
    session.commit()
    return found


def change(session: Session, actor: Principal, ref: str = "north/digits", **fields) -> Dataset:
    return change_rights(session, actor, ref, datasets.TABLE, "dataset", SourceRightsIn(**fields))


def rights_entries(session: Session) -> list[dict]:
    return [e.payload for e in ledger.iter_entries(session) if e.event_type == "source.rights_changed"]


def test_the_owner_changes_rights_and_the_ledger_says_from_what(session: Session,
                                                                 orgs: dict[str, Org]) -> None:
    steward = user("ns", Role.steward, orgs["north"])
    source = change(session, steward, visibility="public", process=["south", "south"], download="everyone")
    stored = (source.visibility, source.process_grant, source.download_grant)
    assert stored == ("public", ["south"], "everyone")
    card = datasets.to_out(source)
    assert (card.process, card.download) == (["south"], "everyone")
    change(session, key(orgs["north"]), process="members")
    change(session, key(orgs["north"]), process="members")  # no change: no entry
    assert rights_entries(session) == [
        {"source": "north/digits", "kind": "table",
         "old": {"visibility": "members", "process": "members", "download": "nobody"},
         "new": {"visibility": "public", "process": ["south"], "download": "everyone"}},
        {"source": "north/digits", "kind": "table",
         "old": {"visibility": "public", "process": ["south"], "download": "everyone"},
         "new": {"visibility": "public", "process": "members", "download": "everyone"}},
    ]
    arena = change_rights(session, key(orgs["north"]), "north/arena", environments.KIND, "environment",
                          SourceRightsIn(visibility="private"))
    assert arena.visibility == "private" and len(rights_entries(session)) == 3


def test_others_hear_it_does_not_exist(session: Session, orgs: dict[str, Org]) -> None:
    for caller in (key(orgs["south"]), user("ss", Role.steward, orgs["south"]),
                   user("admin", Role.admin, None)):
        with pytest.raises(NotFound, match="^no dataset 'north/digits'$"):
            change(session, caller, visibility="public")
    with pytest.raises(NotFound, match="^no environment 'north/digits'$"):
        change_rights(session, key(orgs["north"]), "north/digits", environments.KIND, "environment",
                      SourceRightsIn(visibility="public"))
    with pytest.raises(Forbidden, match="only north's key or stewards"):
        change(session, user("nr", Role.researcher, orgs["north"]), visibility="public")
    assert rights_entries(session) == []


@pytest.mark.parametrize(("fields", "message"), [
    ({}, "give at least one of visibility, process, download"),
    ({"process": ["south", "nowhere", "atlantis"]}, "process: no organisation named 'atlantis', 'nowhere'"),
    ({"visibility": "public", "download": ["ghost"]}, "download: no organisation named 'ghost'"),
    ({"process": "everyone"}, "process: 'everyone' is only for download"),
])
def test_bad_changes_are_refused_naming_the_field(session: Session, orgs: dict[str, Org], fields: dict,
                                                  message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        change(session, key(orgs["north"]), **fields)
    session.rollback()
    source = datasets.by_ref(session, key(orgs["north"]), "north/digits")
    assert (source.visibility, source.process_grant, source.download_grant) == ("members", None, None)
    assert rights_entries(session) == []
