"""A dataset owner's privacy budget enforced by its own node, with a real hub and three real node processes.

The scenario, and why the node (not only the hub) must refuse: north-clinic registers ``digits-dp`` with a
budget of epsilon = 2 at delta = 1e-5. Two DP projects of 2 rounds each (local noise, noise multiplier 3.5,
every source in every round) are proposed while nothing has been spent or approved: each alone needs 1.57,
so the hub's proposal-time check lets both through (it reserves budget for approved projects only; once A is
approved, a third proposal of B would be refused), and both are approved. Run A spends 2 rounds
(1.57 composed). Run B's round 1 brings north to 1.97 (3 rounds composed), within the budget; its round 2 would
bring it to 2.31, so north's node refuses that task, with the numbers, before touching its data. Run B goes on
with south-lab and east-institute (min_nodes = 2) and completes. The ledger holds the refusal and the three
mirrored charges, the card shows what is left, and a third project that needs any more is refused at
proposal time with the numbers.
"""

from __future__ import annotations

import json
import time

import pytest

from consortium.client import HubClient, HubError
from consortium.fl.privacy.budget import Budget, Charge, round_refusal, verdict
from consortium.node import actions
from consortium.node.budget import BUDGET_FILE
from consortium.protocol import RunProgress
from consortium.scenario import ORGS, approve_as, digits_spec

pytestmark = pytest.mark.e2e

OWNER, SIGMA, DELTA, BUDGET = ORGS[0], 3.5, 1e-5, 2.0
BUDGETED = f"{OWNER}/digits-dp"
SOURCES = [BUDGETED] + [f"{org}/digits" for org in ORGS[1:]]
PRIVACY = {"noise": "local", "clip": 1.0, "epsilon": 2.0, "delta": DELTA, "noise_multiplier": SIGMA}


def wait_run(client: HubClient, run_id: int, timeout: float = 240.0) -> RunProgress:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = client.progress(run_id, wait=5.0)
        if progress.run.status != "running":
            return client.progress(run_id)
    raise AssertionError(f"run {run_id} did not finish within {timeout}s")


def dp_spec(name: str, rounds: int):
    return digits_spec(name, ORGS, rounds=rounds, datasets=SOURCES, privacy=PRIVACY, min_nodes=2,
                       round_timeout=60.0)


def approve(consortium, project: dict) -> dict:
    """Attach the test set to a proposed project and have every data owner vote yes to run it."""
    with consortium.hub.client() as admin:
        admin.put_test_set(project["id"], consortium.test_set_bytes())
    for org in project["required_orgs"]:
        approve_as(consortium.org_dirs[org], consortium.hub.url, project)
    with consortium.hub.client() as admin:
        return admin.project(project["id"])


def test_a_dataset_with_budget_two_is_refused_by_its_node_once_the_next_round_would_pass_it(cluster) -> None:
    consortium = cluster.consortium
    loaded, card = actions.prepare_dataset(cluster.workdir / "data" / f"{OWNER}.csv", "digits-dp", "CC-BY-4.0",
                                           target="label", privacy_budget=(BUDGET, DELTA))
    with consortium.org_client(OWNER) as owner:
        registered = actions.register_dataset(owner, consortium.org_dirs[OWNER], loaded, card)
    assert registered["privacy_budget"] == {"epsilon": BUDGET, "delta": DELTA}
    cluster.start_nodes(poll_wait=5.0)
    with consortium.hub.client() as admin:
        proposed = [admin.create_project(dp_spec(name, rounds=2)) for name in ("budget-a", "budget-b")]
    first, second = (approve(consortium, project) for project in proposed)
    with cluster.hub.client() as admin, pytest.raises(HubError) as reserved:
        admin.create_project(dp_spec("budget-b-again", rounds=2))
    assert "spent 0.00, reserved 2.31 by budget-a (2 rounds), budget-b (2 rounds)" in reserved.value.detail

    with cluster.hub.client() as admin:
        run_a = admin.start_run(first["id"])
        progress_a = wait_run(admin, run_a["id"])
        assert progress_a.run.status == "completed", cluster.logs()
        run_b = admin.start_run(second["id"])
        progress_b = wait_run(admin, run_b["id"])
        assert progress_b.run.status == "completed", cluster.logs()
        entries = admin.ledger(limit=10_000)
    assert all(BUDGETED in r.participants for r in progress_a.rounds)
    assert [BUDGETED in r.participants for r in progress_b.rounds] == [True, False]
    assert len(progress_b.rounds[-1].participants) == 2

    expected = round_refusal(BUDGETED, verdict(Budget(BUDGET, DELTA), [Charge(SIGMA)] * 3, [Charge(SIGMA)]))
    assert expected is not None and "spent 1.97, this round 1.07, together 2.31" in expected
    refusals = [e["payload"] for e in entries if e["event_type"] == "task.refused"]
    assert [(r["run_id"], r["reason"]) for r in refusals] == [(run_b["id"], expected)]

    with consortium.org_client(OWNER) as owner:
        charged = [e["payload"] for e in owner.ledger(limit=10_000) if e["event_type"] == "privacy.charged"]
        [dp_card] = [d for d in owner.datasets() if d["name"] == "digits-dp"]
    assert [(c["run_id"], c["round"]) for c in charged] == [(run_a["id"], 1), (run_a["id"], 2), (run_b["id"], 1)]
    assert all(c["dataset"] == BUDGETED and c["noise_multiplier"] == SIGMA for c in charged)
    assert dp_card["privacy_spent"] == pytest.approx(1.97, abs=0.01)
    assert dp_card["privacy_left"] == pytest.approx(BUDGET - dp_card["privacy_spent"])
    kept = (consortium.org_dirs[OWNER] / BUDGET_FILE).read_text().splitlines()
    assert [(json.loads(line)["run_id"], json.loads(line)["round"]) for line in kept] == [
        (c["run_id"], c["round"]) for c in charged]

    with cluster.hub.client() as admin:
        cards = [admin.model(p.run.model_id)["card"]["privacy"]["per_dataset"] for p in (progress_a, progress_b)]
    assert [c[BUDGETED]["budget"]["spent"] for c in cards] == [pytest.approx(1.57, abs=0.01),
                                                                pytest.approx(1.97, abs=0.01)]
    assert all("budget" not in c[f"{org}/digits"] for c in cards for org in ORGS[1:])

    with cluster.hub.client() as admin, pytest.raises(HubError) as refused:
        admin.create_project(dp_spec("budget-c", rounds=1))
    assert refused.value.status_code == 422
    assert (f"{BUDGETED}: privacy budget ε = 2 at δ = 1e-05, spent 1.97, reserved 0.00; this project's 1 rounds "
            "need 1.07, together 2.31") in refused.value.detail
