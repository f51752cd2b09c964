"""Releasing a model, on SQLite and PostgreSQL: only a passed ``release_model`` proposal releases it (its data
owners hold a veto), a licence its data forbids is refused naming the data sources and clauses, the card,
licence and rights are frozen by the release and never change again, and a model that changed after the
proposal opened is not released. Also the licence checks of data registration and project proposals, and
the registry's filters."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.crypto import OrgIdentity, generate_org_key
from consortium.governance import statements
from consortium.governance.wire import ProposalCreate
from consortium.hub.db.models import Dataset, LedgerEntry, Model, Org, Project, ProjectDataset, Proposal, Run
from consortium.hub.services import datasets as dataset_service
from consortium.hub.services import hub_identity, ledger, model_release, policy, proposal_views, proposals
from consortium.hub.services import models as model_service
from consortium.hub.services import projects as project_service
from consortium.hub.services.errors import BadRequest, Conflict, NotFound
from consortium.hub.services.identity import Principal
from consortium.hub.services.model_cards import build_card, card_sha256, render_markdown, source_entries
from consortium.protocol import DatasetCardIn, ProjectCreate, Role, RoundMetrics
from consortium.scenario import digits_spec

ADMIN = Principal("user", "admin", Role.admin, None, None)
FEATURES = 64
SCHEMA = {"features": [{"name": "x", "dtype": "float32", "shape": [FEATURES]}],
          "target": {"name": "label", "dtype": "int64", "shape": []}}
LICENCES = {"north": "CC-BY-4.0", "south": "CC-BY-NC-4.0"}

Orgs = dict[str, tuple[Principal, OrgIdentity]]


def add_org(session: Session, tmp_path: Path, name: str) -> tuple[Principal, OrgIdentity]:
    key = generate_org_key(tmp_path / name, name)
    org = Org(name=name, public_key=key.public_key_b64, key_id=key.key_id, status="admitted")
    session.add(org)
    session.flush()
    if name in LICENCES:
        session.add(Dataset(org_id=org.id, name="digits", rows=10, sha256="0" * 64, license=LICENCES[name],
                            visibility="members", file_format="csv", schema=SCHEMA))
    return Principal("org", name, Role.steward, org.id, name), key


def add_model(session: Session, project: Project) -> Model:
    """A trained model of ``project``, as the scheduler records one (its card over one round)."""
    run = Run(project_id=project.id, status="completed", params_sha256="c" * 64)
    session.add(run)
    session.flush()
    refs = [f"{name}/digits" for name in LICENCES]
    rounds = [RoundMetrics(round=1, participants=refs, dropped=[], train={}, federated_eval={},
                           test={"accuracy": 0.9}, params_sha256="c" * 64, opened_at=0.0, wall_s=1.0,
                           max_fit_compute_s=0.5, max_eval_compute_s=0.1)]
    version = 1 + session.scalar(select(func.count()).select_from(Model).where(Model.project_id == project.id))
    card = build_card(project_id=project.id, project_name=project.name,
                      spec=ProjectCreate.model_validate(project.spec), spec_hash=project.spec_hash, run_id=run.id,
                      version=version, datasets=source_entries(project_service.project_datasets(session, project)),
                      rounds=rounds, params_sha256="c" * 64, code_version="test",
                      created_at=datetime(2026, 1, 1, tzinfo=UTC))
    model = Model(run_id=run.id, project_id=project.id, params_sha256="c" * 64, license=card["license"],
                  card=card, card_markdown=render_markdown(card), version=version, status="trained")
    session.add(model)
    session.commit()
    return model


@pytest.fixture
def world(session: Session, tmp_path: Path) -> tuple[Model, Orgs]:
    """north and south own the data of a project with one trained model; west is a member without data."""
    policy.ensure(session)
    orgs = {name: add_org(session, tmp_path, name) for name in ("north", "south", "west")}
    spec = digits_spec("release", list(LICENCES), rounds=1, min_nodes=1)
    project = Project(name=spec.name, spec=spec.model_dump(mode="json"), spec_hash=project_service.spec_hash(spec),
                      proposer="user:admin", status="approved")
    session.add(project)
    session.flush()
    for dataset in session.scalars(select(Dataset)):
        session.add(ProjectDataset(project_id=project.id, dataset_id=dataset.id))
    session.commit()
    return add_model(session, project), orgs


def release(session: Session, model: Model, licence: str = "CC-BY-NC-4.0", actor: Principal = ADMIN,
            **fields) -> Proposal:
    body = ProposalCreate(kind="release_model", model_id=model.id, licence=licence,
                          **({"visibility": "members", "download": True} | fields))
    return proposal_views.create(session, actor, body)


def vote(session: Session, row: Proposal, orgs: Orgs, org: str, choice: str = "yes") -> None:
    caller, key = orgs[org]
    statement = statements.vote_statement(hub_id=hub_identity.hub_id(session), proposal_id=row.id,
                                          content_hash=row.content_hash, org=org, choice=choice)
    proposals.vote(session, caller, row.id, choice=choice, reason="", content_hash=row.content_hash,
                   signature=key.sign(statements.vote_message(statement)))
    session.refresh(row)


def events(session: Session, event_type: str) -> list[dict]:
    return list(session.scalars(select(LedgerEntry.payload).where(LedgerEntry.event_type == event_type)
                                .order_by(LedgerEntry.seq)))


def test_release_passes_only_with_the_data_owners_yes_and_freezes_the_card(session: Session, world) -> None:
    model, orgs = world
    trained_card = dict(model.card)
    row = release(session, model)
    assert (row.kind, row.status, row.model_id, row.project_id) == ("release_model", "open", model.id,
                                                                    model.project_id)
    assert row.subject == {
        "model_id": model.id, "project_id": model.project_id, "project": "release", "version": 1,
        "params_sha256": "c" * 64, "card_sha256": card_sha256(trained_card), "licence": "CC-BY-NC-4.0",
        "commercial": False, "visibility": "members", "process": "members", "download": "members", "reason": "",
    }
    assert (row.electorate, row.veto_holders) == (["north", "south", "west"], ["north", "south"])
    vote(session, row, orgs, "west")
    vote(session, row, orgs, "north")
    assert row.status == "open", "south, a data owner holding a veto, has not said yes"
    session.refresh(model)
    assert (model.status, model.release_proposal_id, model.card) == ("trained", None, trained_card)
    vote(session, row, orgs, "south")
    assert row.status == "passed"
    session.refresh(model)
    assert (model.status, model.release_proposal_id, model.license, model.visibility) == (
        "released", row.id, "CC-BY-NC-4.0", "members")
    assert (model.process_grant, model.download_grant) == ("members", "members")
    frozen = model.card["release"]
    assert frozen == {"proposal_id": row.id, "licence": "CC-BY-NC-4.0", "commercial": False,
                      "visibility": "members", "rights": {"process": "members", "download": "members"},
                      "released_at": model.released_at.isoformat(), "obligations": trained_card["obligations"]}
    assert {k: v for k, v in model.card.items() if k != "release"} == trained_card
    assert "## Release (frozen)" in model.card_markdown
    assert "- **Licence**: `CC-BY-NC-4.0` (not released for commercial use)" in model.card_markdown
    [entry] = events(session, "model.released")
    assert entry["model_id"] == model.id and entry["card_sha256"] == card_sha256(model.card)
    scoped = session.scalar(select(LedgerEntry.project_id).where(LedgerEntry.event_type == "model.released"))
    assert scoped == model.project_id

    with pytest.raises(Conflict, match=f"model {model.id} is released"):
        release(session, model, "CC-BY-NC-SA-4.0")
    session.rollback()
    session.refresh(model)
    assert model.card["release"] == frozen and model.license == "CC-BY-NC-4.0"


def test_a_data_owner_no_rejects_the_release(session: Session, world) -> None:
    model, orgs = world
    row = release(session, model)
    vote(session, row, orgs, "west")
    vote(session, row, orgs, "north")
    vote(session, row, orgs, "south", "no")
    assert row.status == "rejected"
    session.refresh(model)
    assert model.status == "trained" and "release" not in model.card and events(session, "model.released") == []
    assert release(session, model).status == "open", "a rejected release may be proposed again"


@pytest.mark.parametrize(("licence", "commercial", "named"), [
    ("CC-BY-4.0", False, "'CC-BY-4.0' would permit commercial use of a model trained on south/digits"),
    ("CC-BY-NC-4.0", True, "south/digits (CC-BY-NC-4.0) may not be used commercially (§1(i), §2(a)(1)"),
    ("CC-BY-NC-4.0 OR MIT", False, "would permit commercial use"),
])
def test_a_licence_the_data_forbids_is_refused_naming_the_data_and_clauses(
    session: Session, world, licence: str, commercial: bool, named: str,
) -> None:
    model, _ = world
    before = ledger.head(session)
    with pytest.raises(BadRequest, match="^licence: the model cannot be released under") as info:
        release(session, model, licence, commercial=commercial)
    assert named in info.value.message and "[release_commercial]" in info.value.message
    assert info.value.fields["conflicts"][0]["sources"] == ["south/digits"]
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Proposal)) == 0
    assert ledger.head(session) == before


@pytest.mark.parametrize(("fields", "status", "message"), [
    ({"licence": "Foo-1.0"}, BadRequest, "licence: unknown licence id 'Foo-1.0'"),
    ({"licence": None}, BadRequest, "licence: a release_model proposal names the SPDX licence"),
    ({"model_id": None}, BadRequest, "model_id: a release_model proposal names the model"),
    ({"visibility": "private"}, BadRequest, "visibility: a release widens who sees the model"),
    ({"model_id": 2**31 - 1}, NotFound, f"no model {2**31 - 1}"),
])
def test_malformed_release_proposals_are_refused_and_change_nothing(
    session: Session, world, fields: dict, status: type, message: str,
) -> None:
    model, _ = world
    before = ledger.head(session)
    body = {"kind": "release_model", "model_id": model.id, "licence": "CC-BY-NC-4.0"} | fields
    with pytest.raises(status, match=message.replace("(", r"\(")):
        proposal_views.create(session, ADMIN, ProposalCreate.model_validate(body))
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Proposal)) == 0 and ledger.head(session) == before


def test_a_member_outside_the_project_cannot_see_or_release_its_model(session: Session, world) -> None:
    model, orgs = world
    with pytest.raises(NotFound, match=f"no model {model.id}"):
        release(session, model, actor=orgs["west"][0])
    assert release(session, model, actor=orgs["north"][0]).proposer == "org:north"


def test_one_release_proposal_at_a_time(session: Session, world) -> None:
    model, _ = world
    first = release(session, model)
    with pytest.raises(Conflict, match=f"proposal {first.id} to release model {model.id} is already open"):
        release(session, model)


def test_a_model_that_changed_since_the_proposal_is_not_released(session: Session, world) -> None:
    model, orgs = world
    row = release(session, model)
    model.card = {**model.card, "task": "something else"}
    session.commit()
    for org in ("north", "south"):
        vote(session, row, orgs, org)
    assert row.status == "passed"
    session.refresh(model)
    assert model.status == "trained" and model.release_proposal_id is None
    [skipped] = events(session, "proposal.not_applied")
    assert skipped == {"proposal_id": row.id,
                       "reason": "the model changed or was released since this proposal opened"}


def test_registry_lists_versions_and_filters(session: Session, world) -> None:
    model, orgs = world
    project = model.project
    second = add_model(session, project)
    assert (model.version, second.version) == (1, 2)
    row = release(session, second)
    for org in ("north", "south"):
        vote(session, row, orgs, org)

    def ids(actor: Principal = ADMIN, **filters) -> list[int]:
        return [m.id for m in model_service.listing(session, actor, **filters)]

    assert ids() == [model.id, second.id]
    assert ids(project="release") == ids(project_id=project.id) == [model.id, second.id]
    assert ids(project="other") == []
    assert ids(status="released") == [second.id] and ids(status="trained") == [model.id]
    assert ids(licence="cc-by-nc") == [model.id, second.id]
    assert ids(licence="CC-BY-NC-4.0 AND CC-BY-4.0") == [model.id], "the same expression, spelled otherwise"
    assert ids(licence="MIT") == []
    assert ids(org="south") == [model.id, second.id] and ids(org="west") == []
    assert ids(limit=1) == [model.id] and ids(offset=1) == [second.id]
    assert ids(orgs["north"][0]) == [model.id, second.id]
    assert ids(orgs["west"][0]) == [second.id], "west takes no part: it sees only the model released to members"
    out = model_service.to_out(second)
    assert (out.version, out.status, out.visibility, out.release_proposal_id) == (2, "released", "members", row.id)
    assert [e["source"] for e in out.obligations["non_commercial"]] == ["south/digits"]


def test_a_project_mixing_incompatible_licences_is_refused_and_nothing_is_written(
    session: Session, world, tmp_path: Path,
) -> None:
    caller, _ = world[1]["west"]
    west_id = caller.org_id
    session.add(Dataset(org_id=west_id, name="digits", rows=10, sha256="1" * 64, license="CC-BY-SA-4.0",
                        visibility="members", file_format="csv", schema=SCHEMA))
    session.commit()
    before = (ledger.head(session), session.scalar(select(func.count()).select_from(Project)))
    spec = digits_spec("mixed", ["south", "west"], rounds=1, min_nodes=1)
    with pytest.raises(BadRequest, match="^datasets: the licences of these data sources cannot be mixed") as info:
        project_service.create(session, ADMIN, spec)
    assert "[share_alike_restricted] south/digits, west/digits" in info.value.message
    assert "§3(b)" in info.value.message
    session.rollback()
    assert (ledger.head(session), session.scalar(select(func.count()).select_from(Project))) == before


def test_dataset_registration_checks_and_normalises_the_licence(session: Session, world) -> None:
    caller = world[1]["west"][0]
    card = {"name": "scans", "schema": SCHEMA, "rows": 3, "sha256": "2" * 64, "visibility": "members",
            "file_format": "csv"}
    before = ledger.head(session)
    with pytest.raises(BadRequest, match="^license: unknown licence id 'Foo-1.0'"):
        dataset_service.register(session, caller, DatasetCardIn.model_validate(card | {"license": "Foo-1.0"}))
    session.rollback()
    assert ledger.head(session) == before
    registered = dataset_service.register(
        session, caller, DatasetCardIn.model_validate(card | {"license": "mit OR cc0-1.0"}))
    assert registered.license == "CC0-1.0 OR MIT"
    assert events(session, "dataset.registered")[-1]["license"] == "CC0-1.0 OR MIT"
