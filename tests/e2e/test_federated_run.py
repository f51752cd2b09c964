"""A federated run end to end: a real hub process and three real node processes talking HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest
import torch

from sqlalchemy import select, update

from consortium.client import HubClient
from consortium.crypto import verify_signature
from consortium.governance.statements import outcome_message, vote_message
from consortium.hub.db.models import Org, Vote
from consortium.hub.db.session import make_engine
from consortium.ledger_audit import verify_from_db, verify_from_hub
from consortium.launch import restart_hub
from consortium.model_files import download_model
from consortium.codec import decode_tensors
from consortium.protocol import RunProgress
from consortium.scenario import DIGITS_HYPERPARAMETERS, ORGS, approve_as, digits_spec, propose_and_approve

pytestmark = pytest.mark.e2e


def wait_run(client: HubClient, run_id: int, timeout: float = 240.0) -> RunProgress:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = client.progress(run_id, wait=5.0)
        if progress.run.status != "running":
            return client.progress(run_id)
    raise AssertionError(f"run {run_id} did not finish within {timeout}s")


def wait_round(client: HubClient, run_id: int, round_number: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.run(run_id)
        assert run["status"] == "running", run
        if run["current_round"] >= round_number:
            return
        client.progress(run_id, after_round=round_number - 1, wait=2.0)
    raise AssertionError(f"run {run_id} did not reach round {round_number}")


def test_three_nodes_train_a_model_with_card_and_ledger(cluster, tmp_path) -> None:
    cluster.start_nodes()
    project = propose_and_approve(cluster.consortium, digits_spec("e2e-digits", ORGS, rounds=5))
    with cluster.hub.client() as admin:
        run = admin.start_run(project["id"])
        progress = wait_run(admin, run["id"])
        assert progress.run.status == "completed", cluster.logs()
        assert [r.round for r in progress.rounds] == [1, 2, 3, 4, 5]
        for rnd in progress.rounds:
            assert rnd.participants == sorted(f"{org}/digits" for org in ORGS)
            assert set(rnd.federated_eval) >= {"accuracy", "loss"}
        assert progress.rounds[-1].test["accuracy"] > 0.85

        paths = download_model(admin, progress.run.model_id, tmp_path / "model")
        card = json.loads(paths["card"].read_text())
        weights = paths["weights"].read_bytes()
        assert hashlib.sha256(weights).hexdigest() == card["weights"]["sha256"]
        assert set(decode_tensors(weights)) == {"layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"}
        assert card["participating_orgs"] == sorted(ORGS)
        assert card["license"] == "CC-BY-4.0"
        assert {d["ref"] for d in card["datasets"]} == {f"{org}/digits" for org in ORGS}
        assert all(len(d["sha256"]) == 64 for d in card["datasets"])
        assert len(card["metrics_per_round"]) == 5 and card["seed"] == 0 and card["code_version"]
        assert "# Model card" in paths["card_markdown"].read_text()

        report = verify_from_hub(admin)
        assert report.ok, report.reason
        entries = admin.ledger(limit=10_000)
        keys = {org["name"]: org["public_key"] for org in admin.orgs()}
        hub_key = admin.health()["hub_key"]
        proposal_id = admin.project(project["id"])["proposal_id"]
    events = {entry["event_type"] for entry in entries}
    assert {"policy.adopted", "org.proposed", "org.admitted", "node.enrolled", "dataset.registered",
            "project.proposed", "proposal.opened", "proposal.voted", "proposal.decided", "run.started",
            "round.completed", "run.completed"} <= events
    assert "project.approved" not in events
    # Each owner's yes is its own signed statement in the ledger, and the hub signed the outcome.
    ours = [e for e in entries if e["event_type"].startswith("proposal.")
            and e["payload"].get("proposal_id") == proposal_id]
    voted = [e for e in ours if e["event_type"] == "proposal.voted"]
    assert sorted(e["payload"]["org"] for e in voted) == sorted(ORGS)
    for entry in voted:
        org = entry["payload"]["org"]
        assert entry["actor"] == f"org:{org}" and entry["payload"]["choice"] == "yes"
        assert verify_signature(keys[org], vote_message(entry["payload"]), entry["actor_signature"]), org
    [decided] = [e["payload"] for e in ours if e["event_type"] == "proposal.decided"]
    assert decided["status"] == "passed" and decided["votes"] == {org: "yes" for org in sorted(ORGS)}
    statement = {k: v for k, v in decided.items() if k not in ("reason", "signature")}
    assert verify_signature(hub_key, outcome_message(statement), decided["signature"])
    assert verify_from_db(cluster.hub.db_url or f"sqlite:///{cluster.hub.data_dir / 'hub.db'}").ok


def test_a_node_killed_mid_run_is_dropped_and_the_run_finishes(cluster) -> None:
    cluster.start_nodes(poll_wait=5.0)
    spec = digits_spec("e2e-node-dies", ORGS, rounds=8, min_nodes=2, round_timeout=3.0)
    project = propose_and_approve(cluster.consortium, spec)
    victim = ORGS[2]
    with cluster.hub.client() as admin:
        run = admin.start_run(project["id"])
        wait_round(admin, run["id"], 2)
        cluster.nodes[victim].kill()
        progress = wait_run(admin, run["id"])
    assert progress.run.status == "completed", cluster.logs()
    assert all(f"{victim}/digits" in r.participants for r in progress.rounds[:2])
    assert f"{victim}/digits" not in progress.rounds[-1].participants
    assert len(progress.rounds[-1].participants) == 2
    assert any(f"{victim}/digits" in r.dropped for r in progress.rounds)


@pytest.mark.parametrize("scaffold", [False, True], ids=["fedavg", "scaffold"])
def test_hub_sigkilled_mid_run_resumes_to_the_same_params(cluster, scaffold: bool) -> None:
    """With SCAFFOLD too: the hub's c comes back from the checkpoint and each node replays the lost round from
    the c_i it started that round with."""
    cluster.start_nodes(poll_wait=5.0)
    base = dict(rounds=6, min_nodes=3, round_timeout=120.0, seed=7)
    if scaffold:
        hyperparameters = DIGITS_HYPERPARAMETERS | {"momentum": 0.0, "lr": 0.2, "scaffold": True}
        base["algorithm"] = {"name": "classifier", "hyperparameters": hyperparameters}
    reference = propose_and_approve(cluster.consortium, digits_spec("e2e-reference", ORGS, **base))
    interrupted = propose_and_approve(cluster.consortium, digits_spec("e2e-interrupted", ORGS, **base))
    with cluster.hub.client() as admin:
        ref_run = admin.start_run(reference["id"])
        ref_progress = wait_run(admin, ref_run["id"])
        assert ref_progress.run.status == "completed", cluster.logs()
        run = admin.start_run(interrupted["id"])
        wait_round(admin, run["id"], 3)
    cluster.hub.kill()
    cluster.hub = restart_hub(cluster.hub)
    with cluster.hub.client() as admin:
        progress = wait_run(admin, run["id"])
        assert progress.run.status == "completed", cluster.logs()
        events = admin.ledger(limit=10_000)
        assert verify_from_hub(admin).ok
    assert [r.round for r in progress.rounds] == list(range(1, 7))
    assert progress.rounds[-1].params_sha256 == ref_progress.rounds[-1].params_sha256
    assert [r.params_sha256 for r in progress.rounds] == [r.params_sha256 for r in ref_progress.rounds]
    resumed = [e for e in events if e["event_type"] == "round.abandoned" and e["payload"]["run_id"] == run["id"]]
    # At most the round in flight, plus the one before it when the kill fell between opening a round and
    # committing the previous round's checkpoint (two short transactions); both replay to the same params.
    assert len(resumed) <= 2
    assert len({e["payload"]["round"] for e in resumed}) == len(resumed)


def test_node_refuses_a_project_its_org_did_not_vote_for_itself(cluster) -> None:
    """south-lab's node has no record of a vote, and the yes the hub shows for south-lab no longer verifies
    with south-lab's key (its reason was changed in the hub's database): the node does not adopt it."""
    cluster.start_nodes(poll_wait=5.0)
    spec = digits_spec("e2e-refused", ORGS, rounds=2, min_nodes=2, round_timeout=30.0)
    with cluster.hub.client() as admin:
        project = admin.create_project(spec)
    for org in ORGS:
        approve_as(cluster.consortium.org_dirs[org], cluster.hub.url, project)
    (cluster.consortium.org_dirs["south-lab"] / "votes.json").unlink()
    hub = cluster.hub
    engine = make_engine(hub.db_url or f"sqlite:///{hub.data_dir / 'hub.db'}")
    with engine.begin() as conn:
        south = conn.scalar(select(Org.id).where(Org.name == "south-lab"))
        conn.execute(update(Vote).where(Vote.org_id == south).values(reason="changed by the hub"))
    engine.dispose()
    with cluster.hub.client() as admin:
        run = admin.start_run(project["id"])
        progress = wait_run(admin, run["id"])
        refusals = [e for e in admin.ledger(limit=10_000) if e["event_type"] == "task.refused"]
    assert progress.run.status == "completed", cluster.logs()
    assert all("south-lab/digits" not in r.participants for r in progress.rounds)
    assert refusals and all(r["payload"]["reason"] == f"organisation south-lab has not voted to run project "
                                                      f"{project['id']}" for r in refusals)


def test_federated_kmeans_matches_sklearn_inertia(cluster) -> None:
    from sklearn.cluster import KMeans

    from consortium.scenario import digits_split

    cluster.start_nodes(poll_wait=5.0)
    spec = digits_spec("e2e-kmeans", ORGS, rounds=15, min_nodes=3, validation_fraction=0.0,
                       algorithm={"name": "kmeans", "hyperparameters": {"k": 10}}, strategy={})
    project = propose_and_approve(cluster.consortium, spec, with_test_set=False)
    with cluster.hub.client() as admin:
        run = admin.start_run(project["id"])
        progress = wait_run(admin, run["id"])
        assert progress.run.status == "completed", cluster.logs()
        centroids = decode_tensors(admin.model_weights(progress.run.model_id))["centroids"]
    x_train = digits_split()[0].astype(np.float64)
    pooled = torch.from_numpy(x_train)
    federated = float(torch.cdist(pooled, centroids).pow(2).min(dim=1).values.sum())
    reference = KMeans(n_clusters=10, n_init=10, random_state=0).fit(x_train).inertia_
    assert federated <= 1.02 * reference, (federated, reference)
