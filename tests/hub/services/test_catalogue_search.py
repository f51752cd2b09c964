"""Catalogue search on both backends: every filter, sort and page; the index follows registrations,
publications, withdrawals and rights changes; visibility is exactly ``can_see_source``'s."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.catalogue_wire import CatalogueQuery
from consortium.hub.blobs import BlobStore
from consortium.hub.db.catalogue_models import CatalogueEntry, licence_ids, task_of
from consortium.hub.db.models import Dataset, Org, User
from consortium.hub.services import catalogue, open_data
from consortium.hub.services import policy as policies
from consortium.hub.services.access import can_see_source, reader
from consortium.hub.services.errors import BadRequest
from consortium.hub.services.identity import Principal
from consortium.open_data_wire import AnonymityReport, Datasheet, OpenVersionIn
from consortium.protocol import Role

SHEET = Datasheet.model_validate({key: f"{key} answer about hospital admissions" for key in
                                  Datasheet.model_fields})
FILE = b"age,y\n1,0\n2,1\n"
DIGEST = hashlib.sha256(FILE).hexdigest()


def schema(target: str | None) -> dict:
    return {"features": [{"name": "age", "dtype": "int64"}, {"name": "postcode", "dtype": "string"}],
            "target": None if target is None else {"name": "outcome", "dtype": target}}


def key(org: Org) -> Principal:
    return Principal("org", org.name, Role.steward, org.id, org.name)


@pytest.fixture
def world(session: Session) -> dict[str, Org]:
    policies.ensure(session)
    orgs = {name: Org(name=name, status="admitted") for name in ("north", "south", "east")}
    orgs["guest"] = Org(name="guest", status="pending")
    session.add_all(orgs.values())
    session.flush()
    rows = [("north", "diabetes-2020", "Diabetes admissions in the north", "int64", 1000, "CC-BY-4.0", "public"),
            ("north", "house-prices", "Sale prices of houses", "float64", 50, "Apache-2.0 OR MIT", "members"),
            ("south", "clinic-notes", "Free text clinic notes", None, 20, "CC0-1.0", "private"),
            ("south", "diabetic-retina", "Retina scans labelled for diabetic retinopathy", "bool", 300,
             "CC-BY-4.0", "members"),
            ("east", "weather", "Daily weather", "float64", 7, "CC-BY-SA-4.0", "public")]
    for org, name, description, target, n, licence, visibility in rows:
        session.add(Dataset(org_id=orgs[org].id, name=name, description=description, schema=schema(target),
                            rows=n, sha256="1" * 64, license=licence, visibility=visibility, file_format="csv",
                            download_grant="everyone" if visibility == "public" else None))
    session.commit()
    return orgs


def names(page) -> list[str]:
    return [item.dataset for item in page.items]


def find(session: Session, actor: Principal | None, **filters) -> list[str]:
    return names(catalogue.search(session, actor, CatalogueQuery(**filters)))


def publish(session: Session, org: Org, blobs: BlobStore, ref: str, rows: int, version: str = "1",
            licence: str = "CC-BY-4.0") -> None:
    dataset = session.scalar(select(Dataset).where(Dataset.name == ref.split("/")[1]))
    dataset.sha256, dataset.rows = "2" * 64, rows
    session.commit()
    open_data.append_chunk(session, key(org), blobs, ref, DIGEST, 0, FILE)
    open_data.publish(session, key(org), blobs, ref, OpenVersionIn(
        version=version, sha256=DIGEST, table_sha256="2" * 64, rows=rows, license=licence, datasheet=SHEET,
        anonymity=AnonymityReport(about_people=False)))


def test_visibility_matches_can_see_source(session: Session, world) -> None:
    admin = Principal("user", "admin", Role.admin, None, None)
    session.add(User(name="admin", role="admin"))
    session.commit()
    callers = [None, admin, *(key(org) for org in world.values())]
    for actor in callers:
        who = reader(session, actor)
        expected = sorted(f"{d.org.name}/{d.name}" for d in session.scalars(select(Dataset))
                          if can_see_source(who, d))
        assert sorted(find(session, actor, limit=200)) == expected, actor
    assert sorted(find(session, None)) == ["east/weather", "north/diabetes-2020"]
    assert "south/clinic-notes" in find(session, key(world["south"])) and \
        "south/clinic-notes" not in find(session, key(world["north"]))
    assert find(session, key(world["guest"])) == find(session, None)


def test_filters(session: Session, world) -> None:
    north = key(world["north"])
    assert find(session, north, q="diab") == ["south/diabetic-retina", "north/diabetes-2020"]
    assert find(session, north, q="diab RETINA") == ["south/diabetic-retina"]
    assert find(session, north, q="postcode", task="regression") == ["east/weather", "north/house-prices"]
    assert find(session, north, q="zzz") == []
    assert find(session, north, license="cc-by-4.0") == ["south/diabetic-retina", "north/diabetes-2020"]
    assert find(session, north, license="Apache-2.0") == ["north/house-prices"]
    assert find(session, north, license="MIT OR Apache-2.0") == ["north/house-prices"]
    assert find(session, north, license="CC-BY-SA-4.0") == ["east/weather"]
    with pytest.raises(BadRequest, match="license"):
        find(session, north, license="No-Such-Licence")
    assert find(session, north, task="classification") == ["south/diabetic-retina", "north/diabetes-2020"]
    assert find(session, north, task="unsupervised") == []
    assert find(session, key(world["south"]), task="unsupervised") == ["south/clinic-notes"]
    assert find(session, north, owner="south") == ["south/diabetic-retina"]
    assert find(session, north, owner="nobody-here") == []
    assert find(session, north, min_rows=50, max_rows=300) == ["south/diabetic-retina", "north/house-prices"]
    assert find(session, north, open=True) == [] and len(find(session, north, open=False)) == 4


def test_sorts_and_pages(session: Session, world) -> None:
    north = key(world["north"])
    assert find(session, north, sort="name") == ["north/diabetes-2020", "south/diabetic-retina",
                                                 "north/house-prices", "east/weather"]
    assert find(session, north, sort="rows") == ["north/diabetes-2020", "south/diabetic-retina",
                                                 "north/house-prices", "east/weather"]
    first = catalogue.search(session, north, CatalogueQuery(sort="name", limit=3))
    assert first.next_offset == 3
    last = catalogue.search(session, north, CatalogueQuery(sort="name", limit=3, offset=3))
    assert names(last) == ["east/weather"] and last.next_offset is None
    with pytest.raises(ValueError, match="min_rows"):
        CatalogueQuery(min_rows=5, max_rows=4)


def test_the_index_follows_publish_withdraw_and_rights(session: Session, world, tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    north = key(world["north"])
    publish(session, world["north"], blobs, "north/house-prices", 2, licence="ODbL-1.0")
    assert find(session, north, open=True) == ["north/house-prices"]
    item = catalogue.search(session, north, CatalogueQuery(open=True)).items[0]
    assert (item.latest_version, item.bytes, item.license) == ("1", len(FILE), "ODbL-1.0")
    assert find(session, north, license="ODbL-1.0") == find(session, north, license="MIT") == \
        ["north/house-prices"]
    assert find(session, north, q="admissions", min_bytes=1) == ["north/house-prices", "north/diabetes-2020"][:1]
    assert find(session, north, min_bytes=len(FILE) + 1) == []
    assert find(session, north, sort="bytes")[0] == "north/house-prices"
    open_data.withdraw(session, north, "north/house-prices", "1", "a mistake", datetime.now(UTC))
    assert find(session, north, open=True) == [] and find(session, north, license="ODbL-1.0") == []
    dataset = session.scalar(select(Dataset).where(Dataset.name == "clinic-notes"))
    dataset.visibility = "public"
    session.commit()
    assert "south/clinic-notes" in find(session, None)
    assert session.get(CatalogueEntry, dataset.id).visibility == "public"


def test_task_and_licence_ids() -> None:
    assert task_of({"features": [], "target": None}) == "unsupervised" and task_of({}) == "unsupervised"
    assert task_of(schema("float32")) == "regression" and task_of(schema("string")) == "classification"
    assert licence_ids("(MIT OR Apache-2.0) AND GPL-2.0-only WITH Classpath-exception-2.0") == {
        "mit", "apache-2.0", "gpl-2.0-only", "classpath-exception-2.0"}


def test_the_visibility_filter_keeps_only_cards_the_caller_may_see(session: Session, world) -> None:
    north, south = key(world["north"]), key(world["south"])
    assert find(session, north, visibility="members") == ["south/diabetic-retina", "north/house-prices"]
    assert find(session, north, visibility="public") == ["east/weather", "north/diabetes-2020"]
    assert find(session, north, visibility="private") == []
    assert find(session, south, visibility="private") == ["south/clinic-notes"]
    assert find(session, None, visibility="members") == []
    with pytest.raises(ValueError, match="visibility"):
        CatalogueQuery(visibility="secret")
