"""Approvals on SQLite and PostgreSQL: one hub's id, signed together with the project's spec and test set; a
new test set is a new version that needs every owner's approval again."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from consortium import crypto
from consortium.crypto import OrgIdentity, generate_org_key
from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import Dataset, LedgerEntry, Org, Project, ProjectDataset, Run
from consortium.hub.db.session import make_engine, migrate, session_factory
from consortium.hub.services import hub_identity, hub_key, ledger
from consortium.hub.services import projects as project_service
from consortium.hub.services import runs as run_service
from consortium.hub.services.errors import BadRequest, Conflict
from consortium.hub.services.identity import Principal
from consortium.codec import encode_tensors
from consortium.protocol import ApprovalIn, Role
from consortium.scenario import digits_spec

ADMIN = Principal("user", "admin", Role.admin, None, None)
FEATURES = 4


def held_out(seed: int) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    return encode_tensors({"x": torch.rand(6, FEATURES, generator=generator),
                           "y": torch.randint(0, 10, (6,), generator=generator)})


def entries(session: Session, event_type: str) -> list[dict]:
    return list(session.scalars(select(LedgerEntry.payload).where(LedgerEntry.event_type == event_type)
                                .order_by(LedgerEntry.seq)))


@pytest.fixture
def project(session: Session, tmp_path: Path) -> tuple[Project, dict[str, tuple[Principal, OrgIdentity]]]:
    """A proposed two-org project on a hub with an id; each org as caller with its key."""
    hub_identity.ensure(session)
    orgs = {}
    for name in ("north", "south"):
        key = generate_org_key(tmp_path / name, name)
        org = Org(name=name, public_key=key.public_key_b64, key_id=key.key_id)
        session.add(org)
        session.flush()
        session.add(Dataset(org_id=org.id, name="digits", rows=10, sha256="0" * 64, license="CC0-1.0",
                            visibility="private", file_format="csv",
                            schema={"features": [{"name": "x", "dtype": "float32", "shape": [FEATURES]}]}))
        orgs[name] = (Principal("org", name, Role.steward, org.id, name), key)
    spec = digits_spec("versions", list(orgs), rounds=1, min_nodes=1)
    row = Project(name=spec.name, spec=spec.model_dump(mode="json"),
                  spec_hash=project_service.spec_hash(spec), proposer="user:admin")
    session.add(row)
    session.flush()
    for dataset in session.scalars(select(Dataset)):
        session.add(ProjectDataset(project_id=row.id, dataset_id=dataset.id))
    session.commit()
    return row, orgs


def approve(session: Session, row: Project, caller: Principal, key: OrgIdentity, hub_id: str | None = None,
            signed_hub: str | None = None, test_set: str | None = "current") -> None:
    hub = hub_id or hub_identity.hub_id(session)
    test_set = row.test_set_sha256 if test_set == "current" else test_set
    message = crypto.approval_message(hub_id=signed_hub or hub, project_id=row.id, spec_hash=row.spec_hash,
                                      test_set_sha256=test_set)
    project_service.approve(session, caller, row.id, ApprovalIn(
        spec_hash=row.spec_hash, test_set_sha256=test_set, hub_id=hub, signature=key.sign(message)))


def approve_all(session: Session, row: Project, orgs: dict) -> None:
    for caller, key in orgs.values():
        approve(session, row, caller, key)


def test_the_hub_id_is_made_once_and_kept_in_the_ledger(session: Session) -> None:
    first = hub_identity.ensure(session)
    assert crypto.HUB_ID_RE.fullmatch(first)
    assert hub_identity.ensure(session) == first == hub_identity.hub_id(session)
    assert entries(session, "hub.created") == [{"hub_id": first}]


def test_a_ledger_from_before_hub_ids_gets_one_appended_at_start(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    hub_key.install(engine, hub_key.HubKey.generate())
    with session_factory(engine)() as session:
        ledger.record(session, "user.created", "hub", {"user": "admin", "role": "admin"}, scope=ledger.MEMBERS)
        session.commit()
        hub_id = hub_identity.ensure(session)
        seqs = list(session.scalars(select(LedgerEntry.event_type).order_by(LedgerEntry.seq)))
        assert seqs == ["user.created", "hub.key", "hub.created"]
        assert entries(session, "hub.created") == [{"hub_id": hub_id}]
    engine.dispose()


def test_owners_approve_the_current_version_and_the_project_may_run(session: Session, project) -> None:
    row, orgs = project
    approve(session, row, *orgs["north"])
    assert project_service.approving_orgs(session, row) == ["north"] and row.status == "proposed"
    approve(session, row, *orgs["south"])
    assert project_service.decision(session, row).approved and row.status == "approved"
    payload = entries(session, "project.approved")[-1]
    assert payload["hub_id"] == hub_identity.hub_id(session) and payload["test_set_sha256"] is None
    with pytest.raises(Conflict, match="already approved"):
        approve(session, row, *orgs["south"])


def test_an_approval_for_another_hub_is_refused(session: Session, project) -> None:
    row, orgs = project
    other = "f" * 32
    with pytest.raises(BadRequest, match=f"the approval is for hub {other}"):
        approve(session, row, *orgs["north"], hub_id=other)
    with pytest.raises(BadRequest, match="signature"):
        approve(session, row, *orgs["north"], signed_hub=other)
    caller, key = orgs["north"]
    old_format = key.sign(f"approve:{row.id}:{row.spec_hash}".encode())
    with pytest.raises(BadRequest, match="signature"):
        project_service.approve(session, caller, row.id, ApprovalIn(
            spec_hash=row.spec_hash, test_set_sha256=None, hub_id=hub_identity.hub_id(session),
            signature=old_format))
    assert project_service.approving_orgs(session, row) == []


@pytest.mark.parametrize("when", ["after approval", "after a completed run"])
def test_a_new_test_set_is_a_new_version_to_approve_again(session: Session, project, tmp_path: Path,
                                                          when: str) -> None:
    row, orgs = project
    blobs = BlobStore(tmp_path / "blobs")
    approve_all(session, row, orgs)
    if when == "after a completed run":
        run = run_service.start(session, ADMIN, row.id)
        session.execute(update(Run).where(Run.id == run.id).values(status="completed"))
        session.commit()
    digest = project_service.set_test_set(session, blobs, ADMIN, row.id, held_out(1))
    session.refresh(row)
    assert row.test_set_sha256 == digest and row.status == "proposed"
    assert project_service.approving_orgs(session, row) == []
    with pytest.raises(Conflict, match="waiting for approval from: north, south"):
        run_service.start(session, ADMIN, row.id)
    change = entries(session, "project.test_set")[-1]
    assert change == {"project_id": row.id, "sha256": digest, "previous_sha256": None, "status": "proposed",
                      "approvals_void": ["north", "south"]}

    with pytest.raises(Conflict, match="test_set_sha256 does not match"):
        approve(session, row, *orgs["north"], test_set=None)
    approve_all(session, row, orgs)
    assert project_service.decision(session, row).approved and row.status == "approved"
    before = len(entries(session, "project.test_set"))
    assert project_service.set_test_set(session, blobs, ADMIN, row.id, held_out(1)) == digest
    assert len(entries(session, "project.test_set")) == before, "the same test set again is no new version"
    assert project_service.decision(session, row).approved


def test_the_test_set_cannot_change_while_a_run_is_in_progress(session: Session, project,
                                                               tmp_path: Path) -> None:
    row, orgs = project
    approve_all(session, row, orgs)
    run = run_service.start(session, ADMIN, row.id)
    with pytest.raises(Conflict, match=f"has run {run.id} in progress"):
        project_service.set_test_set(session, BlobStore(tmp_path / "blobs"), ADMIN, row.id, held_out(2))
    session.refresh(row)
    assert row.test_set_sha256 is None and project_service.decision(session, row).approved
