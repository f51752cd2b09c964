"""Two hub replicas on one PostgreSQL database and one blob store, behind a real HAProxy (round-robin), with
three real node processes talking to the proxy only. The replica that holds the run's lease is SIGKILLed
mid-run: the other takes the lease over once it expires, replays from the last checkpoint, and the run ends
with the params of an uninterrupted run of the same seed; the ledger verifies, no round is left open and no
upload is left in the blob store."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consortium.bench.replica_lab import LEASE_S, Replicas
from consortium.launch import start_node
from consortium.ledger_audit import verify_from_hub
from consortium.scenario import ORGS, digits_spec, propose_and_approve

from test_federated_run import wait_round, wait_run

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture
def replicas(haproxy: None, db_url: str, tmp_path: Path) -> Iterator[Replicas]:
    cluster = Replicas(db_url, tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_killing_the_replica_that_drives_a_run_costs_its_lease_not_the_run(replicas: Replicas) -> None:
    started = time.monotonic()
    replicas.start_nodes()
    base = dict(rounds=10, min_nodes=3, round_timeout=60.0, seed=7)
    reference = propose_and_approve(replicas.consortium, digits_spec("replicas-reference", ORGS, **base))
    interrupted = propose_and_approve(replicas.consortium, digits_spec("replicas-interrupted", ORGS, **base))
    with replicas.admin() as admin:
        ref_started = time.monotonic()
        ref_progress = wait_run(admin, admin.start_run(reference["id"])["id"])
        ref_s = time.monotonic() - ref_started
        assert ref_progress.run.status == "completed", replicas.logs()
        run_id = admin.start_run(interrupted["id"])["id"]
        wait_round(admin, run_id, 3)
    victim = replicas.driver_of(run_id)
    assert victim is not None, f"run {run_id} has no live lease"
    victim.kill()
    killed_at = time.monotonic()
    survivor = next(h for h in replicas.hubs if h is not victim)
    with replicas.admin() as admin:
        assert admin.run(run_id)["status"] == "running", "the run ended before the kill: make it longer"
        taken = replicas.wait_driver(run_id, LEASE_S + 10, other_than=victim)
        took_over_s = time.monotonic() - killed_at
        progress = wait_run(admin, run_id)
        assert progress.run.status == "completed", replicas.logs()
        assert verify_from_hub(admin).ok
        events = admin.ledger(limit=10_000)
    finished_s = time.monotonic() - killed_at
    assert taken is survivor, replicas.logs()
    # the lease's length, then at most a keeper tick (a third of it), with room for a loaded machine
    assert took_over_s <= LEASE_S * 4 / 3 + 3, took_over_s
    assert [r.round for r in progress.rounds] == list(range(1, 11))
    assert [r.params_sha256 for r in progress.rounds] == [r.params_sha256 for r in ref_progress.rounds]
    abandoned = [e for e in events if e["event_type"] == "round.abandoned" and e["payload"]["run_id"] == run_id]
    assert 1 <= len(abandoned) <= 2 and len({e["payload"]["round"] for e in abandoned}) == len(abandoned)
    assert replicas.open_rounds() == []
    assert replicas.update_blobs_left() == []
    walls = [r.wall_s for r in ref_progress.rounds]
    print(f"kill at {killed_at - started:.1f}s into the test; reference run {ref_s:.1f}s; "
          f"takeover {took_over_s:.2f}s after the kill, run done {finished_s:.2f}s after it; "
          f"reference rounds wall median {statistics.median(walls):.3f}s max {max(walls):.3f}s")


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_an_upload_answer_brings_another_runs_task_opened_while_the_node_trained(replicas: Replicas) -> None:
    """Two runs of the same orgs at once: a node's upload answer must bring the other run's task opened
    while it trained, although no notification is left to announce it (a replica that only waited for the
    org's next notification would hold the answer for the nodes' whole 30 s wait, and the round with it)."""
    for org in ORGS:
        replicas.nodes[org] = start_node(replicas.url, replicas.consortium.org_dirs[org], poll_wait=30.0)
    base = dict(rounds=3, min_nodes=3, round_timeout=120.0, seed=5)
    projects = [propose_and_approve(replicas.consortium, digits_spec(f"concurrent-{n}", ORGS, **base))
                for n in (1, 2)]
    with replicas.admin() as admin:
        admin.wait_online(list(ORGS))
        run_ids = [admin.start_run(project["id"])["id"] for project in projects]
        done = [wait_run(admin, run_id) for run_id in run_ids]
    assert [p.run.status for p in done] == ["completed", "completed"], replicas.logs()
    walls = [r.wall_s for progress in done for r in progress.rounds]
    assert max(walls) < 20.0, (walls, replicas.logs())
