"""The hub's read rules on SQLite and PostgreSQL: the caller as ``permissions`` reads it, data-source rights,
project participants, ledger scopes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy.orm import Session

from consortium.hub.db.models import Dataset, LedgerEntry, Org, Project, ProjectDataset, User
from consortium.hub.services import access, ledger
from consortium.hub.services.errors import NotFound
from consortium.governance.permissions import ANONYMOUS, EVERYONE, MEMBERS, NOBODY, Grant, Reader, Rights
from consortium.hub.services.identity import Principal
from consortium.ledger.chain import verify_chain
from consortium.protocol import Role, Visibility

ADMIN = Principal("user", "admin", Role.admin, None, None)
LONER = Principal("user", "lone-researcher", Role.researcher, None, None)


def key(org: Org) -> Principal:
    return Principal("org", org.name, Role.steward, org.id, org.name)


def user(name: str, role: Role, org: Org | None) -> Principal:
    return Principal("user", name, role, org.id if org else None, org.name if org else None)


@dataclass
class World:
    orgs: dict[str, Org]
    sources: dict[str, Dataset]
    project: Project
    solo: Project


@pytest.fixture
def world(session: Session) -> World:
    """Orgs a, b, c, d; a project over a's private and b's members dataset proposed by c's researcher carol,
    and a project over d's public dataset proposed by the org-less dave."""
    orgs = {name: Org(name=name) for name in "abcd"}
    session.add_all(orgs.values())
    session.flush()
    session.add_all([User(name="carol", role="researcher", org_id=orgs["c"].id),
                     User(name="dave", role="researcher", org_id=None)])
    sources = {
        name: Dataset(org_id=orgs[owner].id, name=name, schema={}, rows=7, sha256="0" * 64, license="MIT",
                      visibility=visibility, file_format="csv")
        for name, owner, visibility in [("secret", "a", "private"), ("shared", "b", "members"),
                                        ("open", "d", "public")]
    }
    session.add_all(sources.values())
    project = Project(name="p1", spec={}, spec_hash="1" * 64, proposer="user:carol")
    solo = Project(name="p2", spec={}, spec_hash="2" * 64, proposer="user:dave")
    session.add_all([project, solo])
    session.flush()
    session.add_all([ProjectDataset(project_id=project.id, dataset_id=sources["secret"].id),
                     ProjectDataset(project_id=project.id, dataset_id=sources["shared"].id),
                     ProjectDataset(project_id=solo.id, dataset_id=sources["open"].id)])
    session.commit()
    return World(orgs, sources, project, solo)


def test_the_reader_of_each_caller(session: Session, world: World) -> None:
    a, b = world.orgs["a"], world.orgs["b"]
    b.status = "suspended"
    session.commit()
    assert access.reader(session, None) == ANONYMOUS
    assert access.reader(session, ADMIN) == Reader(None, is_admin=True)
    assert access.reader(session, LONER) == Reader(None)
    assert access.reader(session, key(a)) == Reader("a", is_member=True)
    assert access.reader(session, user("ra", Role.researcher, a)) == Reader("a", is_member=True)
    assert access.reader(session, user("sb", Role.steward, b)) == Reader("b", is_member=False)


def test_source_rights_come_from_the_card_and_its_grants(session: Session, world: World) -> None:
    secret = world.sources["secret"]
    assert access.source_rights(secret) == Rights(Visibility.private, MEMBERS, NOBODY)
    secret.visibility, secret.process_grant, secret.download_grant = "public", ["c"], "everyone"
    assert access.source_rights(secret) == Rights(Visibility.public, Grant.to({"c"}), EVERYONE)


def test_source_visibility(session: Session, world: World) -> None:
    a, b = world.orgs["a"], world.orgs["b"]
    callers = {"a key": key(a), "a researcher": user("ra", Role.researcher, a),
               "b steward": user("sb", Role.steward, b), "admin": ADMIN, "no org": LONER, "anonymous": None}
    seen = {name: {s for s, d in world.sources.items()
                   if access.can_see_source(access.reader(session, caller), d)}
            for name, caller in callers.items()}
    assert seen == {
        "a key": {"secret", "shared", "open"},
        "a researcher": {"secret", "shared", "open"},
        "b steward": {"shared", "open"},
        "admin": {"shared", "open"},
        "no org": {"open"},
        "anonymous": {"open"},
    }


def test_process_and_download_follow_the_grants(session: Session, world: World) -> None:
    shared = world.sources["shared"]
    shared.process_grant, shared.download_grant = ["c"], ["a"]
    session.commit()
    readers = {name: access.reader(session, caller) for name, caller in [
        ("a", key(world.orgs["a"])), ("b", key(world.orgs["b"])), ("c", key(world.orgs["c"])),
        ("admin", ADMIN), ("anonymous", None)]}
    assert {n for n, r in readers.items() if access.can_process_source(r, shared)} == {"b", "c"}
    assert {n for n, r in readers.items() if access.can_download_source(r, shared)} == {"a", "b"}
    open_ = world.sources["open"]
    assert {n for n, r in readers.items() if access.can_process_source(r, open_)} == {"a", "b", "c", "admin"}
    assert {n for n, r in readers.items() if access.can_download_source(r, open_)} == set()


def test_parties_are_the_data_owners_and_the_proposer_with_its_org(session: Session, world: World) -> None:
    found = access.parties(session, [world.project.id, world.solo.id, 999])
    ids = {name: org.id for name, org in world.orgs.items()}
    assert found == {
        world.project.id: access.Parties("user:carol", frozenset({ids["a"], ids["b"], ids["c"]})),
        world.solo.id: access.Parties("user:dave", frozenset({ids["d"]})),
    }


def test_only_participants_see_a_project(session: Session, world: World) -> None:
    a, c, d = world.orgs["a"], world.orgs["c"], world.orgs["d"]
    inside = [ADMIN, key(a), user("ra", Role.researcher, a), user("carol", Role.researcher, c),
              user("sc", Role.steward, c), key(c)]
    outside = [LONER, key(d), user("sd", Role.steward, d), user("dave", Role.researcher, None)]
    for caller in inside:
        assert access.visible_project(session, caller, world.project.id).id == world.project.id, caller
    for caller in outside:
        with pytest.raises(NotFound, match=f"no project {world.project.id}"):
            access.visible_project(session, caller, world.project.id)
    with pytest.raises(NotFound):
        access.visible_project(session, ADMIN, 999)
    assert [p.name for p in access.visible_projects(session, user("dave", Role.researcher, None))] == ["p2"]
    assert [p.name for p in access.visible_projects(session, key(d))] == ["p2"]
    assert [p.name for p in access.visible_projects(session, key(c))] == ["p1"]
    assert [p.name for p in access.visible_projects(session, ADMIN)] == ["p1", "p2"]
    assert access.visible_projects(session, LONER) == []


def _entries(session: Session) -> list[LedgerEntry]:
    """The entries the test made (not the hub's own ``hub.key`` and ``hub.created``)."""
    return [e for e in ledger.iter_entries(session) if not e.event_type.startswith("hub.")]


def test_ledger_payloads_follow_the_scope_of_their_entry(session: Session, world: World) -> None:
    ledger.record(session, "org.admitted", "user:admin", {"org": "a"}, scope=ledger.MEMBERS)
    ledger.record(session, "dataset.registered", "org:a", {"dataset": "a/secret"},
                  scope=ledger.source_scope(world.sources["secret"].id))
    ledger.record(session, "dataset.registered", "org:b", {"dataset": "b/shared"},
                  scope=ledger.source_scope(world.sources["shared"].id))
    ledger.record(session, "project.proposed", "user:carol", {"project": "p1"},
                  scope=ledger.project_scope(world.project.id))
    session.commit()
    entries = _entries(session)

    def readable(caller: Principal) -> list[bool]:
        reader = access.ledger_reader(session, caller, entries)
        return [reader(e) for e in entries]

    a, c, d = world.orgs["a"], world.orgs["c"], world.orgs["d"]
    assert readable(key(a)) == [True, True, True, True]
    assert readable(user("carol", Role.researcher, c)) == [True, False, True, True]
    assert readable(key(d)) == [True, False, True, False]
    assert readable(ADMIN) == [True, False, True, True]
    assert readable(LONER) == [True, False, False, False]
    with pytest.raises(TypeError, match="need a Scope"):
        ledger.record(session, "project.proposed", "user:carol", {}, scope=None)


def test_a_new_participant_reads_the_project_history(session: Session, world: World) -> None:
    ledger.record(session, "project.proposed", "user:carol", {"project": "p1"},
                  scope=ledger.project_scope(world.project.id))
    session.commit()
    d = key(world.orgs["d"])
    assert not access.ledger_reader(session, d, _entries(session))(_entries(session)[0])
    session.add(ProjectDataset(project_id=world.project.id, dataset_id=world.sources["open"].id))
    session.commit()
    assert access.ledger_reader(session, d, _entries(session))(_entries(session)[0])


def test_redacted_entries_verify_and_plain_entries_stay_revealed(session: Session, world: World) -> None:
    ledger.record(session, "dataset.registered", "org:a", {"dataset": "a/secret", "rows": 7},
                  scope=ledger.source_scope(world.sources["secret"].id))
    session.commit()
    [entry] = _entries(session)
    hidden = ledger.to_chained(entry, reveal=False)
    assert (hidden.payload, hidden.salt) == (None, None)
    assert hidden.payload_commitment == entry.payload_commitment
    before = [ledger.to_chained(e) for e in ledger.iter_entries(session)][:-1]
    assert verify_chain([*before, hidden]).ok and verify_chain([*before, ledger.to_chained(entry)]).ok
    plain = LedgerEntry(seq=1, event_type="x", actor="hub", payload={"a": 1}, created_at="t", prev_hash="0",
                        hash="h", salt=None, payload_commitment=None)
    assert ledger.to_chained(plain, reveal=False).payload == {"a": 1}
