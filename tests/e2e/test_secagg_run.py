"""Secure aggregation end to end: a real hub process and three real node processes, DP with distributed noise
and SecAgg+ on. The hub receives each node's metrics in clear and its delta only masked; a node killed during
the masked-input stage leaves the round to the two survivors (t = 2 of 3), and the ledger says why."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest

from consortium.client import HubClient, HubError
from consortium.protocol import RunProgress
from consortium.scenario import ORGS, digits_spec, propose_and_approve

pytestmark = pytest.mark.e2e

STAGES = ("advertise_keys", "share_keys", "masked_input", "unmask")
PRIVACY = {"noise": "distributed", "clip": 1.0, "epsilon": 8.0, "delta": 1e-5}


def secure_spec(name: str, rounds: int, round_timeout: float) -> object:
    strategy = {"name": "fedavg", "secure_aggregation": {"threshold": 2, "clip_range": 2.0, "stage_timeout_s": 10.0}}
    return digits_spec(name, ORGS, rounds=rounds, min_nodes=2, round_timeout=round_timeout, strategy=strategy,
                       privacy=PRIVACY)


def wait_run(client: HubClient, run_id: int, timeout: float = 240.0) -> RunProgress:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.progress(run_id, wait=5.0).run.status != "running":
            return client.progress(run_id)
    raise AssertionError(f"run {run_id} did not finish within {timeout}s")


def round_entries(client: HubClient, run_id: int) -> list[dict]:
    return [e["payload"] for e in client.ledger(limit=10_000)
            if e["event_type"] == "round.completed" and e["payload"]["run_id"] == run_id]


def test_three_nodes_with_distributed_noise_aggregate_securely(cluster) -> None:
    cluster.start_nodes(poll_wait=5.0)
    project = propose_and_approve(cluster.consortium, secure_spec("e2e-secagg", rounds=2, round_timeout=60.0))
    with cluster.hub.client() as admin:
        run = admin.start_run(project["id"])
        progress = wait_run(admin, run["id"])
        assert progress.run.status == "completed", cluster.logs()
        entries = round_entries(admin, run["id"])
        everyone = sorted(f"{org}/digits" for org in ORGS)
        for rnd in progress.rounds:
            assert rnd.participants == everyone and rnd.dropped == []
            assert rnd.secure_aggregation["survived"] == dict.fromkeys(STAGES, 3)
            assert rnd.secure_aggregation["threshold"] == 2 and rnd.train
        assert [e["secure_aggregation"] for e in entries] == [r.secure_aggregation for r in progress.rounds]
        assert "test" in entries[-1] and entries[-1]["test"]["accuracy"] > 0.1
    with cluster.consortium.org_client(ORGS[0]) as node:  # the run is over: no round takes messages
        with pytest.raises(HubError) as refused:
            node.secagg_post(1, "advertise_keys", b'{"stage": "advertise_keys"}')
    assert refused.value.status_code == 404 and "no secure aggregation is open" in refused.value.detail
    for org in ORGS:
        assert "sent its unmask message" in cluster.nodes[org].log_tail(400)


def test_a_node_killed_during_the_masked_input_stage_leaves_the_round_to_the_survivors(cluster, monkeypatch) -> None:
    victim = ORGS[2]
    cluster.start_nodes(ORGS[:2], poll_wait=5.0)
    monkeypatch.setenv("CONSORTIUM_SECAGG_HALT_BEFORE", "masked_input")
    cluster.start_nodes([victim], poll_wait=5.0)
    monkeypatch.delenv("CONSORTIUM_SECAGG_HALT_BEFORE")
    project = propose_and_approve(cluster.consortium, secure_spec("e2e-secagg-kill", rounds=2, round_timeout=10.0))
    with cluster.hub.client() as admin:
        run = admin.start_run(project["id"])
        deadline = time.monotonic() + 120
        while "halting before the masked_input stage" not in cluster.nodes[victim].log_tail(400):
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.05)
        task_id, round_id = map(int, re.search(r"task (\d+): secure aggregation of round (\d+)",
                                               cluster.nodes[victim].log_tail(400)).groups())
        refused_bad_messages(cluster, victim, task_id, round_id)
        cluster.nodes[victim].kill()  # SIGKILL while the hub waits for the masked inputs
        progress = wait_run(admin, run["id"])
        assert progress.run.status == "completed", cluster.logs()
        entries = round_entries(admin, run["id"])
    survivors = sorted(f"{org}/digits" for org in ORGS[:2])
    first = progress.rounds[0]
    assert first.participants == survivors and first.dropped == [f"{victim}/digits"]
    assert first.secure_aggregation["dropped_at"] == {"masked_input": [f"{victim}/digits"]}
    assert first.secure_aggregation["survived"] == {"advertise_keys": 3, "share_keys": 3, "masked_input": 2,
                                                    "unmask": 2}
    assert entries[0]["secure_aggregation"] == first.secure_aggregation
    assert entries[0]["dropped"] == [f"{victim}/digits"]
    # the dead node missed a stage: round 2 does not wait its round timeout (10 s) for it
    assert progress.rounds[1].participants == survivors and progress.rounds[1].dropped == []
    assert progress.rounds[1].wall_s < 10.0
    assert len(first.secure_aggregation["refused"]) == 4


def refused_bad_messages(cluster, org: str, task_id: int, round_id: int) -> None:
    """While the round waits for masked inputs: bad messages in the victim's name are refused by name (and the
    round goes on); another org cannot post for the victim's task."""

    def masked(**fields: object) -> bytes:
        message = {"stage": "masked_input", "round": round_id, "sender": str(task_id), "dtype": "uint32",
                   "length": 1, "data": base64.b64encode(b"\0" * 4).decode()} | fields
        return json.dumps(message).encode()

    cases = [(b'{"stage": "masked_input", "round": ', "malformed"),
             (masked(round=round_id + 1), "wrong_round"),
             (masked(), "bad_vector"),
             (masked(dtype="float32"), "bad_vector")]
    with cluster.consortium.org_client(org) as node:
        for body, problem in cases:
            with pytest.raises(HubError) as refused:
                node.secagg_post(task_id, "masked_input", body)
            assert refused.value.status_code == 422 and problem in refused.value.detail, refused.value.detail
    with cluster.consortium.org_client(ORGS[0]) as stranger:
        with pytest.raises(HubError) as foreign:
            stranger.secagg_post(task_id, "masked_input", masked())
    assert foreign.value.status_code == 404
