"""Who sees and downloads a model, on SQLite and PostgreSQL: its project's participants before release; after,
the release decision narrowed by the data sources' rights now."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy.orm import Session

from consortium.hub.db.models import Dataset, Model, Org, Project, ProjectDataset, Run, User
from consortium.hub.services import model_access
from consortium.hub.services import models as model_service
from consortium.hub.services.errors import NotFound
from consortium.hub.services.identity import Principal
from consortium.protocol import Role

ADMIN = Principal("user", "admin", Role.admin, None, None)
DAVE = Principal("user", "dave", Role.researcher, None, None)


def key(org: Org) -> Principal:
    return Principal("org", org.name, Role.steward, org.id, org.name)


@dataclass
class World:
    orgs: dict[str, Org]
    sources: dict[str, Dataset]
    model: Model


@pytest.fixture
def world(session: Session) -> World:
    """Orgs a, b, c, d; a project of the org-less researcher dave over a's and b's public datasets (both
    downloadable by every member), and its trained model."""
    orgs = {name: Org(name=name) for name in "abcd"}
    session.add_all(orgs.values())
    session.add(User(name="dave", role="researcher", org_id=None))
    session.flush()
    sources = {name: Dataset(org_id=orgs[name].id, name="data", schema={}, rows=7, sha256="0" * 64,
                             license="MIT", visibility="public", file_format="csv", download_grant="members")
               for name in "ab"}
    session.add_all(sources.values())
    project = Project(name="p", spec={}, spec_hash="1" * 64, proposer="user:dave")
    session.add(project)
    session.flush()
    session.add_all([ProjectDataset(project_id=project.id, dataset_id=s.id) for s in sources.values()])
    run = Run(project_id=project.id, status="completed", params_sha256="2" * 64)
    session.add(run)
    session.flush()
    model = Model(run_id=run.id, project_id=project.id, params_sha256="2" * 64, license="MIT", card={},
                  card_markdown="")
    session.add(model)
    session.commit()
    return World(orgs, sources, model)


def who_sees(session: Session, world: World) -> tuple[set[str], set[str]]:
    callers = {name: key(org) for name, org in world.orgs.items()} | {
        "admin": ADMIN, "dave": DAVE, "anonymous": None}
    see = {n for n, c in callers.items() if model_access.can_see_model(session, c, world.model)}
    download = {n for n, c in callers.items() if model_access.can_download_model(session, c, world.model)}
    return see, download


def release(session: Session, model: Model, visibility: str, process: object, download: object) -> None:
    model.status, model.visibility = "released", visibility
    model.process_grant, model.download_grant = process, download
    session.commit()


def test_a_trained_model_is_its_participants(session: Session, world: World) -> None:
    assert who_sees(session, world) == ({"a", "b", "admin", "dave"}, {"a", "b", "admin", "dave"})
    for caller in (key(world.orgs["c"]), None):
        with pytest.raises(NotFound, match=f"^no model {world.model.id}$"):
            model_service.get(session, caller, world.model.id)
    assert model_service.get(session, DAVE, world.model.id) is world.model


def test_a_release_is_narrowed_by_the_sources_now(session: Session, world: World) -> None:
    release(session, world.model, "public", "members", "everyone")
    everybody = {"a", "b", "c", "d", "admin", "dave", "anonymous"}
    assert who_sees(session, world) == (everybody, {"a", "b", "c", "d", "admin", "dave"})
    world.sources["a"].download_grant = "everyone"
    world.sources["b"].download_grant = "everyone"
    session.commit()
    assert who_sees(session, world) == (everybody, everybody)
    world.sources["b"].visibility, world.sources["b"].download_grant = "members", ["c"]
    session.commit()
    members = {"a", "b", "c", "d", "admin", "dave"}
    assert who_sees(session, world) == (members, {"a", "b", "c", "admin", "dave"})


def test_a_release_without_download_shows_the_card_only(session: Session, world: World) -> None:
    release(session, world.model, "members", "nobody", "nobody")
    assert who_sees(session, world) == ({"a", "b", "c", "d", "admin", "dave"}, {"a", "b", "admin", "dave"})
    with pytest.raises(NotFound, match=f"^no model {world.model.id}$"):
        model_service.downloadable(session, key(world.orgs["c"]), world.model.id)
    assert model_service.get(session, key(world.orgs["c"]), world.model.id) is world.model


def test_a_suspended_participant_loses_the_model(session: Session, world: World) -> None:
    world.orgs["b"].status = "suspended"
    session.commit()
    see, download = who_sees(session, world)
    assert "b" not in see and "b" not in download and "a" in see
