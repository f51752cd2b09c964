"""What an org voted for cannot change under it: real hub and node processes. A new test set (after the vote
passed, while a vote is open, after a completed run) is a new version with a new ``run_project`` proposal the
owners must vote on again; votes on an earlier version's proposal count for nothing; a node whose org voted
for another test set refuses the tasks; a vote signed for another hub is refused."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import torch

from consortium.client import HubClient, HubError
from consortium.codec import encode_tensors
from consortium.crypto import OrgIdentity, load_org_identity
from consortium.governance import statements
from consortium.governance.wire import VoteIn
from consortium.node.actions import VoteError
from consortium.protocol import RunProgress
from consortium.scenario import ORGS, approve_as, digits_spec, vote_as

pytestmark = pytest.mark.e2e


def wait_ended(client: HubClient, run_id: int, timeout: float = 180.0) -> RunProgress:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.progress(run_id, wait=2.0).run.status != "running":
            return client.progress(run_id)
    raise AssertionError(f"run {run_id} did not end within {timeout}s")


def expect(status: int, fragment: str, fn, *args) -> None:
    with pytest.raises(HubError) as info:
        fn(*args)
    assert info.value.status_code == status and fragment in info.value.detail, info.value.detail


def signed_vote(identity: OrgIdentity, proposal: dict, *, hub_id: str, content_hash: str | None = None,
                choice: str = "yes") -> VoteIn:
    """A vote on ``proposal`` signed as cast on hub ``hub_id`` over ``content_hash`` (default: the
    proposal's), without the checks the CLI makes first."""
    digest = content_hash or proposal["content_hash"]
    statement = statements.vote_statement(hub_id=hub_id, proposal_id=proposal["id"], content_hash=digest,
                                          org=identity.org, choice=choice)
    signature = identity.sign(statements.vote_message(statement))
    return VoteIn(choice=choice, content_hash=digest, signature=signature)


def tensors(cluster, rows: int) -> bytes:
    c = cluster.consortium
    return encode_tensors({"x": torch.from_numpy(c.x_test[:rows]), "y": torch.from_numpy(c.y_test[:rows])})


def test_a_new_test_set_needs_new_votes_and_the_node_holds_to_what_its_org_voted_for(cluster) -> None:
    cluster.start_nodes(poll_wait=5.0)
    consortium, north, south = cluster.consortium, ORGS[0], ORGS[1]
    first, second, interim = consortium.test_set_bytes(), tensors(cluster, 200), tensors(cluster, 100)
    first_sha, second_sha = hashlib.sha256(first).hexdigest(), hashlib.sha256(second).hexdigest()
    spec = digits_spec("e2e-versions", ORGS, rounds=3, min_nodes=2, round_timeout=30.0)
    with cluster.hub.client() as admin:
        project = admin.create_project(spec)
        pid, opened = project["id"], project["proposal_id"]
        hub_id = admin.health()["hub_id"]
    for org in ORGS:
        approve_as(consortium.org_dirs[org], cluster.hub.url, project)

    with cluster.hub.client() as admin:
        assert admin.project(pid)["status"] == "approved"
        assert admin.proposal(opened)["status"] == "passed"
        admin.put_test_set(pid, first)  # after the vote passed
        shown = admin.project(pid)
        assert shown["test_set_sha256"] == first_sha
        assert (shown["status"], shown["approved_orgs"]) == ("proposed", [])
        current = shown["proposal_id"]
        assert current != opened
        proposal = admin.proposal(current)
        assert (proposal["status"], proposal["subject"]["test_set_sha256"]) == ("open", first_sha)
        assert proposal["missing"] == sorted(ORGS)
        expect(409, f"cannot run yet: proposal {current} is open", admin.start_run, pid)
        old = admin.proposal(opened)
    north_key = load_org_identity(consortium.org_dirs[north])
    with consortium.org_client(north) as client:  # the earlier version's proposal takes no more votes
        expect(409, f"proposal {opened} is passed: it takes no more votes",
               client.vote, opened, signed_vote(north_key, old, hub_id=hub_id))

    # A vote on a version that changes while the vote is open counts for nothing.
    vote_as(consortium.org_dirs[north], cluster.hub.url, current)
    with cluster.hub.client() as admin:
        assert admin.project(pid)["approved_orgs"] == [north]
        admin.put_test_set(pid, interim)
        superseded = admin.proposal(current)
        assert (superseded["status"], superseded["reason"]) == (
            "withdrawn", "superseded by a new version of the project")
        assert admin.project(pid)["approved_orgs"] == []
    with pytest.raises(VoteError, match="another version of the project"):
        vote_as(consortium.org_dirs[south], cluster.hub.url, current)
    with consortium.org_client(south) as client:
        expect(409, f"proposal {current} is withdrawn: it takes no more votes", client.vote, current,
               signed_vote(load_org_identity(consortium.org_dirs[south]), superseded, hub_id=hub_id))
    south_book = json.loads((consortium.org_dirs[south] / "votes.json").read_text())
    assert south_book[str(pid)]["proposal_id"] == opened, "a refused vote is not recorded for the node"

    with cluster.hub.client() as admin:
        admin.put_test_set(pid, first)
        shown = admin.project(pid)
        assert shown["proposal_id"] not in (opened, current) and shown["approved_orgs"] == []
    for org in ORGS:
        subject = approve_as(consortium.org_dirs[org], cluster.hub.url, project)
        assert subject.subject["test_set_sha256"] == first_sha and subject.proposal_id == shown["proposal_id"]
    north_voted_first = (consortium.org_dirs[north] / "votes.json").read_text()
    assert json.loads(north_voted_first)[str(pid)] == {
        "spec_hash": project["spec_hash"], "test_set_sha256": first_sha, "hub_id": hub_id,
        "proposal_id": shown["proposal_id"], "content_hash": subject.content_hash}

    with cluster.hub.client() as admin:
        assert admin.project(pid)["status"] == "approved"
        run = admin.start_run(pid)
        expect(409, "in progress", admin.put_test_set, pid, second)
        progress = wait_ended(admin, run["id"])
        assert progress.run.status == "completed", cluster.logs()
        assert all(len(r.participants) == 3 for r in progress.rounds)
        assert "accuracy" in progress.rounds[-1].test

        admin.put_test_set(pid, second)  # after a completed run
        assert admin.project(pid)["status"] == "proposed"
        expect(409, "cannot run yet", admin.start_run, pid)
    for org in ORGS:
        approve_as(consortium.org_dirs[org], cluster.hub.url, project)
    # north's node still holds its vote for the first test set (its book missed the new vote, as after a vote
    # cast in the web page): at its first task it adopts the vote the hub recorded, since the org's key signed
    # it, and trains; its book then holds the new test set.
    (consortium.org_dirs[north] / "votes.json").write_text(north_voted_first)

    with cluster.hub.client() as admin:
        run = admin.start_run(pid)
        progress = wait_ended(admin, run["id"])
    assert progress.run.status == "completed", cluster.logs()
    assert all(len(r.participants) == 3 for r in progress.rounds)
    assert json.loads((consortium.org_dirs[north] / "votes.json").read_text())[str(pid)]["test_set_sha256"] \
        == second_sha


def test_a_vote_signed_for_another_hub_is_refused(cluster) -> None:
    consortium, org = cluster.consortium, ORGS[0]
    with cluster.hub.client() as admin:
        project = admin.create_project(digits_spec("e2e-other-hub", [org], rounds=1, min_nodes=1))
        hub_id = admin.health()["hub_id"]
        proposal = admin.proposal(project["proposal_id"])
        before = admin.ledger_head()
    identity = load_org_identity(consortium.org_dirs[org])
    other = "f" * 32 if hub_id != "f" * 32 else "e" * 32
    # The same proposal as another hub would hold it: its content names that hub, so it hashes differently.
    content = statements.proposal_content(other, "run_project", proposal["subject"])
    elsewhere = statements.content_hash(content)
    assert elsewhere != proposal["content_hash"]

    with consortium.org_client(org) as client:
        expect(422, "content_hash", client.vote, proposal["id"],
               signed_vote(identity, proposal, hub_id=other, content_hash=elsewhere))
        expect(422, "signature", client.vote, proposal["id"], signed_vote(identity, proposal, hub_id=other))
        unchanged = client.proposal(proposal["id"])
        assert (unchanged["status"], unchanged["votes"]) == ("open", [])
        assert client.ledger_head() == before
        client.vote(proposal["id"], signed_vote(identity, proposal, hub_id=hub_id))
        shown = client.project(project["id"])
        assert (shown["status"], shown["approved_orgs"]) == ("approved", [org])
        assert client.proposal(proposal["id"])["status"] == "passed"
