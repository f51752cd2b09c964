"""A run that fails mid-round sets its nodes free at once: real hub and node processes, and the nodes' own
logs as the witness of what they trained and uploaded after the failure."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest
import torch

from consortium.client import HubClient
from consortium.codec import encode_tensors
from consortium.protocol import RunProgress
from consortium.scenario import ORGS, approve_as, digits_spec

pytestmark = pytest.mark.e2e


def wait_ended(client: HubClient, run_id: int, timeout: float = 120.0) -> RunProgress:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.progress(run_id, wait=2.0).run.status != "running":
            return client.progress(run_id)
    raise AssertionError(f"run {run_id} did not end within {timeout}s")


def node_log(cluster, org: str) -> str:
    return cluster.nodes[org].log_path.read_text(errors="replace")


def trained(log: str, run_id: int) -> Counter:
    """How often the node trained (or evaluated) each task of ``run_id``: one upload attempt follows each."""
    return Counter(int(m) for m in re.findall(rf"task (\d+) \(\w+, run {run_id}, round \d+\): done", log))


def bad_label_test_set(cluster) -> bytes:
    """A hub test set the hub's own evaluation fails on (a label outside the model's 10 classes): the run
    fails right after the next round's tasks went out, as any internal error at that moment would make it."""
    y = cluster.consortium.y_test.copy()
    y[0] = 10
    return encode_tensors({"x": torch.from_numpy(cluster.consortium.x_test), "y": torch.from_numpy(y)})


@pytest.mark.parametrize("failure", ["hub-error-with-tasks-out", "node-killed-below-min-nodes"])
def test_after_a_run_fails_no_node_trains_or_uploads_for_it_again(cluster, failure: str) -> None:
    cluster.start_nodes(poll_wait=5.0)
    hub_error = failure == "hub-error-with-tasks-out"
    timeout = 30.0 if hub_error else 4.0
    spec = digits_spec(f"e2e-{failure}", ORGS, rounds=6, min_nodes=3, round_timeout=timeout)
    with cluster.hub.client() as admin:
        project = admin.create_project(spec)
        if hub_error:
            admin.put_test_set(project["id"], bad_label_test_set(cluster))
    for org in ORGS:
        approve_as(cluster.consortium.org_dirs[org], cluster.hub.url, project)
    alive = list(ORGS)
    with cluster.hub.client() as admin:
        run_id = admin.start_run(project["id"])["id"]
        if not hub_error:
            while admin.run(run_id)["current_round"] < 1:
                admin.progress(run_id, wait=2.0)
            cluster.nodes[alive.pop()].kill()
        progress = wait_ended(admin, run_id)
    assert progress.run.status == "failed", cluster.logs()
    if hub_error:
        assert "labels must lie in [0, 10)" in progress.run.error
        assert progress.rounds == [], "round 1 failed at its checkpoint, after round 2's tasks went out"
    else:
        assert "of the required min_nodes=3 nodes answered" in progress.run.error

    # With the failed run's tasks left on the task board, each node trained and uploaded them again and again
    # (some 13 times a second) until the round's 30 s deadline: these seconds would show it.
    time.sleep(3.0)
    before = {org: trained(node_log(cluster, org), run_id) for org in alive}
    time.sleep(1.5)
    for org in alive:
        log = node_log(cluster, org)
        counts = trained(log, run_id)
        assert counts and max(counts.values()) == 1, f"{org} trained a task twice: {counts}\n{cluster.logs()}"
        assert counts == before[org], f"{org} still trains for the failed run\n{cluster.logs()}"
        # A round-2 upload that landed before the failure committed was accepted; any later one heard why not.
        told = re.findall(r"result not needed any more: (.*)", log)
        assert all(why.startswith(f"run {run_id} failed: ") for why in told), told
