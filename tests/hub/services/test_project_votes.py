"""Votes to run a project, on SQLite and PostgreSQL: signed by each org's key over the proposal's content
hash (this hub, the project, its spec and its test set); a new test set is a new version with a new proposal;
decided, expired or withdrawn proposals take no votes; a run starts only once its proposal passed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from consortium import crypto
from consortium.codec import encode_tensors
from consortium.crypto import OrgIdentity, generate_org_key
from consortium.governance import statements
from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import Dataset, LedgerEntry, Org, Project, ProjectDataset, Proposal, Run, Vote
from consortium.hub.db.session import session_factory
from consortium.hub.services import hub_identity, policy, proposals
from consortium.hub.services import projects as project_service
from consortium.hub.services import runs as run_service
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden
from consortium.hub.services.identity import Principal
from consortium.protocol import Role
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


def add_org(session: Session, tmp_path: Path, name: str, with_data: bool = True) -> tuple[Principal, OrgIdentity]:
    key = generate_org_key(tmp_path / name, name)
    org = Org(name=name, public_key=key.public_key_b64, key_id=key.key_id, status="admitted")
    session.add(org)
    session.flush()
    if with_data:
        session.add(Dataset(org_id=org.id, name="digits", rows=10, sha256="0" * 64, license="CC0-1.0",
                            visibility="private", file_format="csv",
                            schema={"features": [{"name": "x", "dtype": "float32", "shape": [FEATURES]}]}))
    return Principal("org", name, Role.steward, org.id, name), key


@pytest.fixture
def project(session: Session, tmp_path: Path) -> tuple[Project, dict[str, tuple[Principal, OrgIdentity]]]:
    """A two-org project (north and south own its data, west only votes) on a hub with its policy."""
    policy.ensure(session)
    orgs = {name: add_org(session, tmp_path, name, with_data=name != "west") for name in ("north", "south", "west")}
    spec = digits_spec("versions", ["north", "south"], rounds=1, min_nodes=1)
    row = Project(name=spec.name, spec=spec.model_dump(mode="json"),
                  spec_hash=project_service.spec_hash(spec), proposer="user:admin")
    session.add(row)
    session.flush()
    for dataset in session.scalars(select(Dataset)):
        session.add(ProjectDataset(project_id=row.id, dataset_id=dataset.id))
    proposals.propose_run(session, row, "user:admin")
    session.commit()
    return row, orgs


def signed_vote(session: Session, row: Proposal, caller: Principal, key: OrgIdentity, choice: str = "yes",
                hub_id: str | None = None, content_hash: str | None = None) -> dict:
    statement = statements.vote_statement(
        hub_id=hub_id or hub_identity.hub_id(session), proposal_id=row.id,
        content_hash=content_hash or row.content_hash, org=caller.org_name, choice=choice, reason="")
    return {"choice": choice, "reason": "", "content_hash": row.content_hash,
            "signature": key.sign(statements.vote_message(statement))}


def vote(session: Session, project_row: Project, caller: Principal, key: OrgIdentity, choice: str = "yes",
         now: datetime | None = None, **kwargs) -> Vote:
    row = project_service.current_proposal(session, project_row)
    return proposals.vote(session, caller, row.id, now=now, **signed_vote(session, row, caller, key, choice, **kwargs))


def test_the_hub_id_is_made_once_and_kept_in_the_ledger(session: Session) -> None:
    first = hub_identity.ensure(session)
    assert crypto.HUB_ID_RE.fullmatch(first)
    assert hub_identity.ensure(session) == first == hub_identity.hub_id(session)
    assert entries(session, "hub.created") == [{"hub_id": first}]
    assert len(entries(session, "hub.key")) == 1


def test_owners_vote_yes_and_the_project_may_run(session: Session, project) -> None:
    row, orgs = project
    vote(session, row, *orgs["north"])
    vote(session, row, *orgs["west"], choice="no")
    assert project_service.to_out(session, row).approved_orgs == ["north"] and row.status == "proposed"
    with pytest.raises(Conflict, match="cannot run yet"):
        run_service.start(session, ADMIN, row.id)
    vote(session, row, *orgs["south"])
    proposal = project_service.current_proposal(session, row)
    assert proposal.status == "passed" and row.status == "approved"
    decided = entries(session, "proposal.decided")[-1]
    assert decided["status"] == "passed" and decided["votes"] == {"north": "yes", "south": "yes"}
    assert proposal.advisory == ["west"], "west owns no data: its no is shown, not counted"
    assert decided["hub_id"] == hub_identity.hub_id(session)
    with pytest.raises(Conflict, match="is passed: it takes no more votes"):
        vote(session, row, *orgs["south"], choice="no")
    assert run_service.start(session, ADMIN, row.id).status == "running"


def test_an_owner_no_is_a_veto(session: Session, project) -> None:
    row, orgs = project
    vote(session, row, *orgs["north"])
    vote(session, row, *orgs["south"], choice="no")
    proposal = project_service.current_proposal(session, row)
    assert proposal.status == "rejected" and "south" in proposal.reason and row.status == "proposed"


def test_a_later_vote_replaces_the_earlier_one_while_open(session: Session, project) -> None:
    row, orgs = project
    vote(session, row, *orgs["west"], choice="no")
    vote(session, row, *orgs["west"], choice="abstain")
    proposal = project_service.current_proposal(session, row)
    assert [(v.org.name, v.choice) for v in proposals.votes_of(session, proposal)] == [("west", "abstain")]
    assert len(entries(session, "proposal.voted")) == 2


def test_votes_signed_for_another_hub_or_content_are_refused(session: Session, project) -> None:
    row, orgs = project
    with pytest.raises(BadRequest, match="signature"):
        vote(session, row, *orgs["north"], hub_id="f" * 32)
    with pytest.raises(BadRequest, match="signature"):
        vote(session, row, *orgs["north"], content_hash="e" * 64)
    caller, _ = orgs["north"]
    proposal = project_service.current_proposal(session, row)
    forged = signed_vote(session, proposal, caller, orgs["south"][1])
    with pytest.raises(BadRequest, match="signature"):
        proposals.vote(session, caller, proposal.id, **forged)
    with pytest.raises(BadRequest, match="content_hash"):
        proposals.vote(session, caller, proposal.id, **{**forged, "content_hash": "d" * 64})
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Vote)) == 0
    assert entries(session, "proposal.voted") == []


def test_users_without_an_org_cannot_vote(session: Session, project) -> None:
    row, orgs = project
    proposal = project_service.current_proposal(session, row)
    researcher = Principal("user", "rita", Role.researcher, None, None)
    with pytest.raises(Forbidden):
        proposals.vote(session, ADMIN, proposal.id, **signed_vote(session, proposal, *orgs["north"]))
    with pytest.raises(Exception, match="no proposal"):
        proposals.vote(session, researcher, proposal.id, **signed_vote(session, proposal, *orgs["north"]))


def test_an_expired_proposal_takes_no_votes(session: Session, project) -> None:
    row, orgs = project
    proposal = project_service.current_proposal(session, row)
    vote(session, row, *orgs["north"])
    late = proposal.closes_at + timedelta(seconds=1)
    with pytest.raises(Conflict, match="expired"):
        vote(session, row, *orgs["south"], now=late)
    session.refresh(proposal)
    assert proposal.status == "expired" and entries(session, "proposal.decided")[-1]["status"] == "expired"
    assert session.scalar(select(func.count()).select_from(Vote)) == 1
    with pytest.raises(Conflict, match="cannot run yet"):
        run_service.start(session, ADMIN, row.id)


def test_the_proposer_withdraws_and_then_nobody_votes(session: Session, project) -> None:
    row, orgs = project
    proposal = project_service.current_proposal(session, row)
    with pytest.raises(Forbidden, match="only the proposer"):
        proposals.withdraw(session, orgs["north"][0], proposal.id)
    proposals.withdraw(session, ADMIN, proposal.id, "wrong datasets")
    with pytest.raises(Conflict, match="withdrawn"):
        vote(session, row, *orgs["north"])
    with pytest.raises(Conflict, match="withdrawn"):
        proposals.withdraw(session, ADMIN, proposal.id)


@pytest.mark.parametrize("when", ["after the vote passed", "after a completed run"])
def test_a_new_test_set_is_a_new_version_to_vote_on(session: Session, project, tmp_path: Path, when: str) -> None:
    row, orgs = project
    blobs = BlobStore(tmp_path / "blobs")
    first = project_service.current_proposal(session, row)
    vote(session, row, *orgs["north"])
    vote(session, row, *orgs["south"])
    if when == "after a completed run":
        run = run_service.start(session, ADMIN, row.id)
        session.execute(update(Run).where(Run.id == run.id).values(status="completed"))
        session.commit()
    digest = project_service.set_test_set(session, blobs, ADMIN, row.id, held_out(1))
    session.refresh(row)
    second = project_service.current_proposal(session, row)
    assert row.test_set_sha256 == digest and row.status == "proposed" and second.id != first.id
    assert second.subject["test_set_sha256"] == digest and second.content_hash != first.content_hash
    assert project_service.to_out(session, row).approved_orgs == []
    with pytest.raises(Conflict, match="cannot run yet"):
        run_service.start(session, ADMIN, row.id)
    with pytest.raises(BadRequest, match="signature"):
        proposals.vote(session, orgs["north"][0], second.id,
                       **{**signed_vote(session, first, *orgs["north"]), "content_hash": second.content_hash})
    vote(session, row, *orgs["north"])
    vote(session, row, *orgs["south"])
    assert row.status == "approved"
    before = len(entries(session, "proposal.opened"))
    assert project_service.set_test_set(session, blobs, ADMIN, row.id, held_out(1)) == digest
    assert len(entries(session, "proposal.opened")) == before, "the same test set again is no new version"


def test_a_superseded_open_proposal_is_withdrawn(session: Session, project, tmp_path: Path) -> None:
    row, orgs = project
    first = project_service.current_proposal(session, row)
    vote(session, row, *orgs["north"])
    project_service.set_test_set(session, BlobStore(tmp_path / "blobs"), ADMIN, row.id, held_out(3))
    session.refresh(first)
    assert first.status == "withdrawn" and "superseded" in first.reason


def test_one_hundred_concurrent_votes_of_one_org_leave_one(session: Session, project) -> None:
    row, orgs = project
    caller, key = orgs["west"]
    proposal = project_service.current_proposal(session, row)
    bodies = [signed_vote(session, proposal, caller, key, choice=("yes", "no", "abstain")[i % 3])
              for i in range(100)]
    factory = session_factory(session.get_bind())

    def cast(body: dict) -> str:
        with factory() as own:
            proposals.vote(own, caller, proposal.id, **body)
        return body["choice"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(cast, bodies))
    session.expire_all()
    rows = list(session.scalars(select(Vote).where(Vote.proposal_id == proposal.id)))
    assert len(rows) == 1 and rows[0].org.name == "west"
    assert len(entries(session, "proposal.voted")) == 100
    assert entries(session, "proposal.voted")[-1]["choice"] == rows[0].choice


def test_the_admin_cannot_bypass_a_rule(session: Session, project) -> None:
    """The admin neither runs an undecided project, nor votes with an org's signature, nor suspends an org
    without the members' decision."""
    from consortium.governance.policy import ProposalKind
    from consortium.hub.services import members

    row, orgs = project
    proposal = project_service.current_proposal(session, row)
    with pytest.raises(Conflict, match="cannot run yet"):
        run_service.start(session, ADMIN, row.id)
    with pytest.raises(Forbidden, match="only an organisation's key or steward can vote"):
        proposals.vote(session, ADMIN, proposal.id, **signed_vote(session, proposal, *orgs["north"]))
    suspension = members.propose_status_change(session, ADMIN, ProposalKind.suspend_org, "north", "audit")
    assert suspension.status == "open"
    assert session.scalar(select(Org.status).where(Org.name == "north")) == "admitted"
    assert session.scalar(select(func.count()).select_from(Vote)) == 0 and row.status == "proposed"


def test_only_a_passed_proposal_admits_suspends_approves_or_changes_policy() -> None:
    """No hub code but the effects of passed proposals sets what the members decide."""
    import re

    import consortium.hub

    decided = re.compile(r"\b(org|project)\.status\s*=(?!=)|\.status\s*=\s*[\"'](approved|admitted|suspended|"
                         r"released)[\"']|\bpolicies\.adopt\(")
    found = {path.name for path in Path(consortium.hub.__file__).parent.rglob("*.py")
             if decided.search(path.read_text())}
    assert "proposal_effects.py" in found and found <= {"proposal_effects.py", "proposals.py", "projects.py"}
    # A new version goes back to "proposed"; the proposer may withdraw a project (no decision of the members).
    for name, allowed in (("proposals.py", ('"proposed"',)), ("projects.py", ('"proposed"', '"withdrawn"'))):
        text = (Path(consortium.hub.__file__).parent / "services" / name).read_text()
        assignments = re.findall(r"project\.status\s*=(?!=)[^=\n]*", text)
        assert assignments and all(line.rstrip().endswith(allowed) for line in assignments), assignments
