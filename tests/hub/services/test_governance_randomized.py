"""Randomized governance (hypothesis, 1,000 cases): whatever members vote, when and in what order, and
whether the proposer withdraws, nothing governed happens unless the pure rules say its proposal passed: a
project runs only after its run_project proposal passed, an org is admitted only after its admit_org
proposal passed, a model is released only after its release_model proposal passed, and every decision the
hub stored is the one :func:`decide` gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.crypto import OrgIdentity, generate_org_key
from consortium.governance import statements
from consortium.governance.decisions import ProposalStatus, decide
from consortium.governance.wire import ProposalCreate
from consortium.hub.db.models import Dataset, Model, Org, Project, ProjectDataset, Proposal, Run
from consortium.hub.db.session import make_engine, migrate, session_factory
from consortium.hub.services import hub_identity, members, model_release, policy, proposals
from consortium.hub.services import projects as project_service
from consortium.hub.services import runs as run_service
from consortium.hub.services.errors import ServiceError
from consortium.hub.services.hub_key import HubKey
from consortium.hub.services.identity import Principal
from consortium.hub.services.model_cards import build_card, render_markdown, source_entries
from consortium.protocol import OrgCreate, ProjectCreate, Role
from consortium.scenario import digits_spec

ADMIN = Principal("user", "admin", Role.admin, None, None)
ORG_NAMES = ("a-org", "b-org", "c-org", "d-org")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
WEEK = timedelta(days=7)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """One SQLite hub with four admitted orgs (each owning a dataset) and their keys."""
    root: Path = tmp_path_factory.mktemp("governance")
    engine = make_engine(f"sqlite:///{root / 'hub.db'}")
    migrate(engine)
    hub_identity.start(engine, HubKey.generate())
    session = session_factory(engine)()
    policy.ensure(session)
    keys: dict[str, tuple[Principal, OrgIdentity]] = {}
    for name in ORG_NAMES:
        key = generate_org_key(root / name, name)
        org = Org(name=name, public_key=key.public_key_b64, key_id=key.key_id, status="admitted")
        session.add(org)
        session.flush()
        session.add(Dataset(org_id=org.id, name="digits", rows=10, sha256="0" * 64, license="CC0-1.0",
                            visibility="members", file_format="csv",
                            schema={"features": [{"name": "x", "dtype": "float32", "shape": [4]}]}))
        keys[name] = (Principal("org", name, Role.steward, org.id, name), key)
    session.commit()
    yield session, keys
    session.close()
    engine.dispose()


def cast(session: Session, row: Proposal, caller: Principal, key: OrgIdentity, choice: str, now: datetime) -> None:
    statement = statements.vote_statement(hub_id=hub_identity.hub_id(session), proposal_id=row.id,
                                          content_hash=row.content_hash, org=caller.org_name, choice=choice)
    try:
        proposals.vote(session, caller, row.id, choice=choice, reason="", content_hash=row.content_hash,
                       signature=key.sign(statements.vote_message(statement)), now=now)
    except ServiceError:
        session.rollback()


def project_of(session: Session, name: str, owners: list[str]) -> Project:
    spec = digits_spec(name, owners, rounds=1, min_nodes=1)
    project = Project(name=spec.name, spec=spec.model_dump(mode="json"),
                      spec_hash=project_service.spec_hash(spec), proposer="user:admin")
    session.add(project)
    session.flush()
    for dataset in session.scalars(select(Dataset).join(Org).where(Org.name.in_(owners))):
        session.add(ProjectDataset(project_id=project.id, dataset_id=dataset.id))
    return project


def trained_model(session: Session, project: Project) -> Model:
    """A model of ``project`` as a completed run leaves it (a card over no rounds)."""
    run = Run(project_id=project.id, status="completed", params_sha256="c" * 64)
    session.add(run)
    session.flush()
    card = build_card(project_id=project.id, project_name=project.name,
                      spec=ProjectCreate.model_validate(project.spec), spec_hash=project.spec_hash,
                      run_id=run.id, version=1,
                      datasets=source_entries(project_service.project_datasets(session, project)), rounds=[],
                      params_sha256="c" * 64, code_version="test", created_at=T0)
    model = Model(run_id=run.id, project_id=project.id, params_sha256="c" * 64, license=card["license"],
                  card=card, card_markdown=render_markdown(card), version=1, status="trained")
    session.add(model)
    session.flush()
    return model


def pure_status(session: Session, row: Proposal, now: datetime) -> ProposalStatus:
    return decide(proposals.facts(session, row), proposals.cast_votes(session, row), now).status


actions = st.lists(
    st.tuples(st.sampled_from(ORG_NAMES + ("withdraw",)), st.sampled_from(("yes", "no", "abstain")),
              st.integers(min_value=0, max_value=int(1.2 * WEEK.total_seconds()))),
    max_size=6,
)
counter = iter(range(10**6))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(owners=st.lists(st.sampled_from(ORG_NAMES), min_size=1, max_size=3, unique=True), steps=actions,
       kind=st.sampled_from(("run_project", "admit_org", "release_model")))
def test_nothing_happens_unless_its_proposal_passed(world, owners: list[str], steps, kind: str) -> None:
    session, keys = world
    case = next(counter)
    if kind == "run_project":
        project = project_of(session, f"p{case}", owners)
        row = proposals.propose_run(session, project, "user:admin", now=T0)
        session.commit()
    elif kind == "release_model":
        model = trained_model(session, project_of(session, f"p{case}", owners))
        session.commit()
        row = model_release.propose(session, ADMIN, ProposalCreate(
            kind="release_model", model_id=model.id, licence="CC0-1.0", visibility="members", download=True),
            now=T0)
        assert sorted(row.veto_holders) == sorted(owners)
    else:
        candidate = members.create_org(session, ADMIN, OrgCreate(name=f"cand-{case}"), now=T0)
        row = session.scalar(select(Proposal).where(Proposal.org_id == candidate.id))
    for who, choice, at in sorted(steps, key=lambda s: s[2]):
        now = T0 + timedelta(seconds=at)
        if who == "withdraw":
            try:
                proposals.withdraw(session, ADMIN, row.id, now=now)
            except ServiceError:
                session.rollback()
        else:
            cast(session, row, *keys[who], choice, now)
        session.refresh(row)
        expected = pure_status(session, row, now)
        assert row.status == expected.value or (row.status == "open" and expected != ProposalStatus.open
                                                and expected.value in ("expired", "rejected", "passed")
                                                and now >= row.closes_at), (row.status, expected)
    end = T0 + 2 * WEEK
    proposals.settle(session, row, end)
    session.commit()
    final = pure_status(session, row, end)
    assert row.status == final.value
    if kind == "run_project":
        session.refresh(project)
        assert (project.status == "approved") == (final == ProposalStatus.passed)
        try:
            run_service.start(session, ADMIN, project.id)
            started = True
        except ServiceError:
            session.rollback()
            started = False
        assert started == (final == ProposalStatus.passed)
    elif kind == "release_model":
        session.refresh(model)
        assert (model.status == "released") == (final == ProposalStatus.passed)
        assert (model.release_proposal_id == row.id) == (final == ProposalStatus.passed)
        assert ("release" in model.card) == (final == ProposalStatus.passed)
    else:
        session.refresh(candidate)
        assert (candidate.status == "admitted") == (final == ProposalStatus.passed)
        if candidate.status == "admitted":  # keep the electorate of later cases at the four orgs
            candidate.status = "proposed"
            session.commit()
