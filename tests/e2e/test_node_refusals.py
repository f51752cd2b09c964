"""A node that cannot train says why at once, and a node picks up what its org registers while it runs: real
hub and node processes."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from consortium.client import HubClient
from consortium.crypto import load_org_identity
from consortium.node import actions
from consortium.protocol import RunProgress
from consortium.scenario import ORGS, approve_as, digits_spec

pytestmark = pytest.mark.e2e


def wait_ended(client: HubClient, run_id: int, timeout: float) -> tuple[RunProgress, float]:
    """The run's progress once it ended, and how many seconds after the call it did."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if client.progress(run_id, wait=1.0).run.status != "running":
            return client.progress(run_id), time.monotonic() - started
    raise AssertionError(f"run {run_id} did not end within {timeout}s")


def test_a_dataset_edited_after_registration_is_refused_and_fails_the_run_within_seconds(cluster) -> None:
    cluster.start_nodes(poll_wait=5.0)
    edited = ORGS[0]
    csv = cluster.workdir / "data" / f"{edited}.csv"
    frame = pd.read_csv(csv)
    frame.loc[0, "p10"] = frame.loc[0, "p10"] + 0.5
    frame.to_csv(csv, index=False)

    spec = digits_spec("e2e-edited-data", ORGS, rounds=3, min_nodes=3, round_timeout=300.0)
    with cluster.hub.client() as admin:
        project = admin.create_project(spec)
        admin.put_test_set(project["id"], cluster.consortium.test_set_bytes())
    for org in ORGS:
        approve_as(cluster.consortium.org_dirs[org], cluster.hub.url, project)
    with cluster.hub.client() as admin:
        run_id = admin.start_run(project["id"])["id"]
        progress, took = wait_ended(admin, run_id, timeout=60.0)
        entries = admin.ledger()
    assert progress.run.status == "failed", cluster.logs()
    print(f"run failed {took:.2f}s after it started")
    assert took < 10.0, f"the run took {took:.1f}s to fail"
    assert "min_nodes=3 can no longer be met" in progress.run.error
    assert f"{edited}/digits refused: local error: dataset 'digits'" in progress.run.error
    assert "changed since it was registered" in progress.run.error
    (refusal,) = progress.refusals
    assert refusal.startswith(f"round 1: {edited}/digits refused: local error:") and "changed since" in refusal
    refused = [e for e in entries if e["event_type"] == "task.refused"]
    assert len(refused) == 1 and "changed since it was registered" in refused[0]["payload"]["reason"]


def test_a_dataset_registered_while_the_node_runs_is_trained_on_without_a_restart(cluster) -> None:
    cluster.start_nodes(poll_wait=2.0)
    orgs = ORGS[:2]
    for org in orgs:
        loaded, card = actions.prepare_dataset(cluster.workdir / "data" / f"{org}.csv", "digits-late",
                                               "CC-BY-4.0", target="label")
        with HubClient(cluster.hub.url, identity=load_org_identity(cluster.consortium.org_dirs[org])) as client:
            actions.register_dataset(client, cluster.consortium.org_dirs[org], loaded, card)
    spec = digits_spec("e2e-late-data", orgs, rounds=1, min_nodes=2, round_timeout=60.0)
    spec = spec.model_copy(update={"datasets": [f"{org}/digits-late" for org in orgs]})
    with cluster.hub.client() as admin:
        project = admin.create_project(spec)
        admin.put_test_set(project["id"], cluster.consortium.test_set_bytes())
    for org in orgs:
        approve_as(cluster.consortium.org_dirs[org], cluster.hub.url, project)
    with cluster.hub.client() as admin:
        run_id = admin.start_run(project["id"])["id"]
        progress, _ = wait_ended(admin, run_id, timeout=90.0)
    assert progress.run.status == "completed", (progress.run.error, cluster.logs())
    assert progress.refusals == []
