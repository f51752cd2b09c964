"""Publishing open data versions on both backends: chunks appended only at the end, a hash mismatch or a
refusal leaves no staged file, no blob and no row; versions immutable and linked; withdrawal keeps the row;
downloads need the grant and the accepted licence, count per org and credit the owner once per org."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import CreditMovement, Dataset, LedgerEntry, Org
from consortium.hub.db.open_data_models import OpenDataDownload, OpenDataVersion
from consortium.hub.services import open_data
from consortium.hub.services import open_data_downloads as downloads
from consortium.hub.services import policy as policies
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden, Gone, NotFound
from consortium.hub.services.identity import Principal
from consortium.open_data_wire import AnonymityReport, Datasheet, OpenVersionIn
from consortium.protocol import Role

SCHEMA = {"features": [{"name": "x", "dtype": "float32"}], "target": None}
TABLE = "1" * 64
SHEET = Datasheet.model_validate({key: f"{key} answer" for key in Datasheet.model_fields})
FILE = b"x\n1.0\n2.0\n"
DIGEST = hashlib.sha256(FILE).hexdigest()


def key(org: Org) -> Principal:
    return Principal("org", org.name, Role.steward, org.id, org.name)


@pytest.fixture
def orgs(session: Session) -> dict[str, Org]:
    policies.ensure(session)
    found = {name: Org(name=name) for name in ("north", "south", "east")}
    session.add_all(found.values())
    session.flush()
    session.add(Dataset(org_id=found["north"].id, name="people", schema=SCHEMA, rows=2, sha256=TABLE,
                        license="CC0-1.0", visibility="members", file_format="csv", download_grant=["south"]))
    session.commit()
    return found


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def body(version: str = "1", sha256: str = DIGEST, license: str = "CC0-1.0") -> OpenVersionIn:
    return OpenVersionIn(version=version, sha256=sha256, table_sha256=TABLE, rows=2, license=license,
                         datasheet=SHEET, anonymity=AnonymityReport(about_people=False))


def stage(session: Session, actor: Principal, blobs: BlobStore, data: bytes = FILE, digest: str = DIGEST) -> None:
    half = len(data) // 2
    assert open_data.append_chunk(session, actor, blobs, "north/people", digest, 0, data[:half]) == half
    open_data.append_chunk(session, actor, blobs, "north/people", digest, half, data[half:])


def stored_files(blobs: BlobStore) -> list[Path]:
    return [p for p in blobs.root.rglob("*") if p.is_file()]


def test_publish_stores_the_blob_and_links_versions(session: Session, orgs, blobs: BlobStore) -> None:
    north = key(orgs["north"])
    stage(session, north, blobs)
    first = open_data.publish(session, north, blobs, "north/people", body("1"))
    assert blobs.get(DIGEST) == FILE and stored_files(blobs) == [blobs.path(DIGEST)]
    stage(session, north, blobs)
    second = open_data.publish(session, north, blobs, "north/people", body("2"))
    assert second.predecessor_id == first.id and first.size == len(FILE)
    events = session.scalars(select(LedgerEntry.event_type)).all()
    assert events.count("dataset.published") == 2


def test_refused_publishes_leave_nothing(session: Session, orgs, blobs: BlobStore) -> None:
    north = key(orgs["north"])
    with pytest.raises(Conflict, match="offset 0"):
        open_data.append_chunk(session, north, blobs, "north/people", DIGEST, 3, b"x")
    stage(session, north, blobs, FILE[:-1])  # truncated: the declared hash is of the whole file
    with pytest.raises(BadRequest, match="truncated"):
        open_data.publish(session, north, blobs, "north/people", body())
    stage(session, north, blobs)
    with pytest.raises(BadRequest, match="No-Such"):
        open_data.publish(session, north, blobs, "north/people", body(license="No-Such"))
    stage(session, north, blobs)
    with pytest.raises(BadRequest, match="latest"):
        open_data.publish(session, north, blobs, "north/people", body(version="latest"))
    assert stored_files(blobs) == [] and session.scalar(select(OpenDataVersion)) is None
    stage(session, north, blobs)
    open_data.publish(session, north, blobs, "north/people", body())
    stage(session, north, blobs)
    with pytest.raises(Conflict, match="immutable"):
        open_data.publish(session, north, blobs, "north/people", body())
    assert stored_files(blobs) == [blobs.path(DIGEST)]
    with pytest.raises(Forbidden):
        open_data.append_chunk(session, key(orgs["south"]), blobs, "north/people", DIGEST, 0, b"x")


def test_downloads_need_the_grant_and_credit_the_owner_once_per_org(session: Session, orgs,
                                                                      blobs: BlobStore) -> None:
    north, south, east = (key(orgs[name]) for name in ("north", "south", "east"))
    stage(session, north, blobs)
    row = open_data.publish(session, north, blobs, "north/people", body())
    with pytest.raises(NotFound):
        downloads.authorise(session, east, "north/people", "1", None)
    with pytest.raises(NotFound):
        downloads.authorise(session, None, "north/people", "1", None)
    for _ in range(3):
        assert downloads.authorise(session, south, "north/people", "1", None).id == row.id
        downloads.count_download(session, south, row)
    counter = session.scalar(select(OpenDataDownload).where(OpenDataDownload.org_id == orgs["south"].id))
    assert counter.count == 3
    earned = session.scalars(select(CreditMovement).where(CreditMovement.org_id == orgs["north"].id)).all()
    assert [m.reason for m in earned] == ["open_data"]
    open_data.withdraw(session, north, "north/people", "1", "consent withdrawn", datetime.now(UTC))
    with pytest.raises(Gone, match="consent withdrawn"):
        downloads.authorise(session, south, "north/people", "1", None)


def test_a_licence_with_obligations_is_accepted_once(session: Session, orgs, blobs: BlobStore) -> None:
    north, south = key(orgs["north"]), key(orgs["south"])
    stage(session, north, blobs)
    open_data.publish(session, north, blobs, "north/people", body(license="CC-BY-4.0"))
    with pytest.raises(Forbidden, match="accepted"):
        downloads.authorise(session, south, "north/people", "1", None)
    first = downloads.accept_licence(session, south, "cc-by-4.0")
    assert downloads.accept_licence(session, south, "CC-BY-4.0").id == first.id
    assert downloads.authorise(session, south, "north/people", None, None).version == "1"
    events = session.scalars(select(LedgerEntry.event_type)).all()
    assert events.count("licence.accepted") == 1


def test_a_changed_blob_is_never_served(session: Session, orgs, blobs: BlobStore) -> None:
    north = key(orgs["north"])
    stage(session, north, blobs)
    row = open_data.publish(session, north, blobs, "north/people", body())
    assert downloads.blob_file(blobs, row) == blobs.path(DIGEST)
    blobs.path(DIGEST).write_bytes(b"x\n9.0\n2.0\n")
    with pytest.raises(downloads.CorruptFile):
        downloads.blob_file(blobs, row)


def test_abandoned_uploads_expire(session: Session, orgs, blobs: BlobStore) -> None:
    north = key(orgs["north"])
    open_data.append_chunk(session, north, blobs, "north/people", DIGEST, 0, FILE[:3])
    staged = open_data.staged_path(blobs, orgs["north"].id, DIGEST)
    modified = staged.stat().st_mtime
    assert open_data.expire_uploads(blobs, modified + 60) == []
    assert open_data.expire_uploads(blobs, modified + open_data.STALE_UPLOAD_S + 1) == [staged]
    assert stored_files(blobs) == []


def test_the_running_hash_survives_a_restart_and_notices_a_changed_file(session: Session, orgs, blobs: BlobStore,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    north = key(orgs["north"])
    open_data.append_chunk(session, north, blobs, "north/people", DIGEST, 0, FILE[:4])
    monkeypatch.setattr(open_data, "RUNNING", open_data.RunningHashes())  # a restarted hub: no running hash
    open_data.append_chunk(session, north, blobs, "north/people", DIGEST, 4, FILE[4:])
    open_data.publish(session, north, blobs, "north/people", body("1"))
    assert blobs.get(DIGEST) == FILE
    # a staged file changed behind the hub's back (same size): hashed whole again, refused, deleted
    stage(session, north, blobs)
    staged = open_data.staged_path(blobs, orgs["north"].id, DIGEST)
    appended = staged.stat().st_mtime_ns
    staged.write_bytes(FILE.replace(b"1.0", b"7.0"))
    os.utime(staged, ns=(appended, appended + 10_000_000))  # written later (coarse clocks may not show it)
    with pytest.raises(BadRequest, match="truncated or corrupted"):
        open_data.publish(session, north, blobs, "north/people", body("2"))
    assert not staged.exists() and stored_files(blobs) == [blobs.path(DIGEST)]
