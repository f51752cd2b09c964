"""Sample-level DP-SGD in a real run: a hub and three node processes, each node training its digits with
Opacus under its own noise multiplier (from its rows), the owner's budget charged with the round's local steps,
and a model card that states each dataset's per-record guarantee.

north-clinic registers ``digits-dp`` with a budget of epsilon = 3; the project asks for epsilon = 2 over 3
rounds, so the proposal fits and every round is charged (on the node's disk and mirrored on the hub) as
``steps`` Poisson-sampled Gaussian steps at the dataset's rate.
"""

from __future__ import annotations

import json
import time

import pytest

from consortium.fl.privacy.budget import Charge, epsilon_of
from consortium.node import actions
from consortium.node.budget import BUDGET_FILE
from consortium.plan import RunPlan
from consortium.scenario import ORGS, digits_spec, propose_and_approve

pytestmark = pytest.mark.e2e

OWNER, DELTA = ORGS[0], 1e-5
BUDGETED = f"{OWNER}/digits-dp"
SOURCES = [BUDGETED] + [f"{org}/digits" for org in ORGS[1:]]
PRIVACY = {"mechanism": "dp_sgd", "clip": 1.0, "epsilon": 2.0, "delta": DELTA}


def test_a_dp_sgd_run_trains_charges_its_steps_and_states_per_record_guarantees(cluster) -> None:
    consortium = cluster.consortium
    loaded, card = actions.prepare_dataset(cluster.workdir / "data" / f"{OWNER}.csv", "digits-dp", "CC-BY-4.0",
                                           target="label", privacy_budget=(3.0, DELTA))
    with consortium.org_client(OWNER) as owner:
        actions.register_dataset(owner, consortium.org_dirs[OWNER], loaded, card)
    cluster.start_nodes(poll_wait=5.0)
    spec = digits_spec("dp-sgd", ORGS, rounds=3, datasets=SOURCES, privacy=PRIVACY, round_timeout=120.0)
    project = propose_and_approve(consortium, spec)
    with cluster.hub.client() as admin:
        run = admin.start_run(project["id"])
        progress = admin.progress(run["id"], wait=5.0)
        deadline = time.monotonic() + 300
        while progress.run.status == "running" and time.monotonic() < deadline:
            progress = admin.progress(run["id"], wait=5.0)
        progress = admin.progress(run["id"])
        assert progress.run.status == "completed", cluster.logs()
        model_card = admin.model(progress.run.model_id)["card"]
    assert all(len(r.participants) == 3 for r in progress.rounds)
    assert progress.rounds[-1].test["accuracy"] > 0.3, "ten classes: chance is 0.1"

    plan = RunPlan.of(spec)
    rows = {d["ref"]: d["rows"] for d in model_card["datasets"]}
    privacy = model_card["privacy"]
    assert privacy["mechanism"] == "dp_sgd" and privacy["unit"] == "record"
    for ref, guarantee in privacy["per_dataset"].items():
        own = plan.dp_sgd_plan_of_source(rows[ref])
        assert guarantee["epsilon"] <= 2.0 and guarantee["noise_multiplier"] == pytest.approx(own.noise_multiplier)
        assert (guarantee["rounds"], guarantee["steps_per_round"]) == (3 * own.steps_per_round, own.steps_per_round)

    charge = plan.dp_sgd_plan_of_source(rows[BUDGETED]).round_charge()
    with consortium.org_client(OWNER) as owner:
        charged = [e["payload"] for e in owner.ledger(limit=10_000) if e["event_type"] == "privacy.charged"]
        [dp_card] = [d for d in owner.datasets() if d["name"] == "digits-dp"]
    assert [(c["round"], c["steps"]) for c in charged] == [(n, charge.steps) for n in (1, 2, 3)]
    spent = epsilon_of([Charge(charge.noise_multiplier, charge.sampling_rate, charge.steps)] * 3, DELTA)
    assert spent <= 2.0 and dp_card["privacy_spent"] == pytest.approx(spent)
    assert privacy["per_dataset"][BUDGETED]["budget"]["spent"] == pytest.approx(spent)
    kept = [json.loads(line) for line in (consortium.org_dirs[OWNER] / BUDGET_FILE).read_text().splitlines()]
    assert [(k["round"], k["steps"]) for k in kept] == [(n, charge.steps) for n in (1, 2, 3)]
    with cluster.hub.client() as admin:
        markdown = admin.request("GET", f"/api/models/{progress.run.model_id}/card.md").text
    assert "## Privacy (sample-level differential privacy, DP-SGD)" in markdown
