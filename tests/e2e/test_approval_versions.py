"""What an org approved cannot change under it: real hub and node processes. A new test set (after approval,
after a completed run) is a new version the owners must approve again, and a node whose org signed another
test set refuses the tasks; an approval signed for another hub is refused."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import torch

from consortium.client import HubClient, HubError
from consortium.crypto import approval_message, load_org_identity
from consortium.codec import encode_tensors
from consortium.protocol import ApprovalIn, RunProgress
from consortium.scenario import ORGS, approve_as, digits_spec

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


def test_a_new_test_set_needs_approval_again_and_the_node_holds_to_what_it_signed(cluster) -> None:
    cluster.start_nodes(poll_wait=5.0)
    consortium, north = cluster.consortium, ORGS[0]
    first = consortium.test_set_bytes()
    second = encode_tensors({"x": torch.from_numpy(consortium.x_test[:200]),
                             "y": torch.from_numpy(consortium.y_test[:200])})
    spec = digits_spec("e2e-versions", ORGS, rounds=3, min_nodes=2, round_timeout=30.0)
    with cluster.hub.client() as admin:
        project = admin.create_project(spec)
        pid = project["id"]
    for org in ORGS:
        approve_as(consortium.org_dirs[org], cluster.hub.url, project)

    with cluster.hub.client() as admin:
        assert admin.project(pid)["status"] == "approved"
        admin.put_test_set(pid, first)  # after approval
        shown = admin.project(pid)
        assert shown["test_set_sha256"] == hashlib.sha256(first).hexdigest()
        assert (shown["status"], shown["approved_orgs"]) == ("proposed", [])
        expect(409, "waiting for approval", admin.start_run, pid)
    for org in ORGS:
        subject = approve_as(consortium.org_dirs[org], cluster.hub.url, project)
        assert subject.test_set_sha256 == shown["test_set_sha256"]
    north_signed_first = (consortium.org_dirs[north] / "approvals.json").read_text()
    assert json.loads(north_signed_first)[str(pid)]["test_set_sha256"] == shown["test_set_sha256"]

    with cluster.hub.client() as admin:
        run = admin.start_run(pid)
        expect(409, "in progress", admin.put_test_set, pid, second)
        progress = wait_ended(admin, run["id"])
        assert progress.run.status == "completed", cluster.logs()
        assert all(len(r.participants) == 3 for r in progress.rounds)
        assert "accuracy" in progress.rounds[-1].test

        admin.put_test_set(pid, second)  # after a completed run
        assert admin.project(pid)["status"] == "proposed"
        expect(409, "waiting for approval", admin.start_run, pid)
    for org in ORGS:
        approve_as(consortium.org_dirs[org], cluster.hub.url, project)
    # north's node still holds its approval of the first test set: the hub counts the new signature, the node
    # goes by what its own book says its org signed.
    (consortium.org_dirs[north] / "approvals.json").write_text(north_signed_first)

    with cluster.hub.client() as admin:
        run = admin.start_run(pid)
        progress = wait_ended(admin, run["id"])
        refusals = [e["payload"] for e in admin.ledger(limit=10_000)
                    if e["event_type"] == "task.refused" and e["payload"]["run_id"] == run["id"]]
    assert progress.run.status == "completed", cluster.logs()
    assert all(f"{north}/digits" not in r.participants and len(r.participants) == 2 for r in progress.rounds)
    first_sha, second_sha = hashlib.sha256(first).hexdigest(), hashlib.sha256(second).hexdigest()
    assert refusals and all(r["reason"] == f"organisation {north} approved project {pid} with test set "
                                           f"{first_sha[:16]}…, not {second_sha[:16]}…" for r in refusals)


def test_an_approval_signed_for_another_hub_is_refused(cluster) -> None:
    consortium, org = cluster.consortium, ORGS[0]
    with cluster.hub.client() as admin:
        project = admin.create_project(digits_spec("e2e-other-hub", [org], rounds=1, min_nodes=1))
        hub_id = admin.health()["hub_id"]
    identity = load_org_identity(consortium.org_dirs[org])
    other = "f" * 32 if hub_id != "f" * 32 else "e" * 32

    def body(named: str, signed: str) -> ApprovalIn:
        message = approval_message(hub_id=signed, project_id=project["id"], spec_hash=project["spec_hash"],
                                   test_set_sha256=None)
        return ApprovalIn(spec_hash=project["spec_hash"], test_set_sha256=None, hub_id=named,
                          signature=identity.sign(message))

    with consortium.org_client(org) as client:
        expect(422, f"the approval is for hub {other}", client.approve, project["id"], body(other, other))
        expect(422, "signature", client.approve, project["id"], body(hub_id, other))
        client.approve(project["id"], body(hub_id, hub_id))
        assert client.project(project["id"])["approved_orgs"] == [org]
