"""The node's privacy-budget ledger: a charge per round on its disk before training, a refusal with the numbers
once the next round would pass the budget, one charge for a replayed round, none for data without a budget,
and no training at all for a project without DP on budgeted data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from sklearn.datasets import load_digits

from consortium.fl.algorithms.classifier import Classifier
from consortium.fl.core import parse_hyperparams
from consortium.fl.privacy.budget import Budget, Charge, round_refusal, verdict
from consortium.node.agent import NodeAgent
from consortium.node.budget import BUDGET_FILE, BudgetLedger
from consortium.node.policy import NodePolicy, VoteBook, VotedVersion, spec_hash
from consortium.node.registry import LocalRegistry, build_card
from consortium.plan import RunPlan
from consortium.codec import encode_tensors
from consortium.protocol import ProjectCreate, TaskKind, TaskOut
from consortium.tables import load_table

ORG, PROJECT_ID, RUN_ID = "north", 5, 9
SIGMA, BUDGET_EPSILON, DELTA = 3.5, 2.0, 1e-5
"""Rounds at sigma 3.5 compose to epsilon 1.07, 1.57, 1.97, 2.31 at delta 1e-5: the 4th passes 2."""
PRIVACY = {"noise": "local", "clip": 1.0, "epsilon": 8.0, "delta": DELTA, "noise_multiplier": SIGMA}


class Hub:
    """A scripted hub: records uploads, refusals and mirrored charges, with what the node's disk held when
    each charge was reported; ``unreachable`` makes the charge report fail like a network error."""

    def __init__(self, org_dir: Path) -> None:
        self.org_dir = org_dir
        self.queue: list[tuple[TaskOut, dict]] = []
        self.uploads: dict[int, bytes] = {}
        self.results: dict[int, object] = {}
        self.refusals: dict[int, str] = {}
        self.charges: list[tuple[int, float, float, int, bool, int]] = []
        self.unreachable = False

    def next_task(self, wait: float, have: str | None = None):
        return self.queue.pop(0) if self.queue else None

    def task_params(self, task_id: int) -> bytes:
        raise AssertionError("params always come with the task here")

    def post_update(self, task_id: int, payload: bytes, wait: float = 0.0, have: str | None = None) -> None:
        self.uploads[task_id] = payload

    def post_result(self, task_id: int, result) -> None:
        self.results[task_id] = result

    def post_refusal(self, task_id: int, reason: str) -> None:
        self.refusals[task_id] = reason

    def post_privacy_charge(self, task_id: int, noise_multiplier: float, sampling_rate: float,
                            steps: int = 1) -> dict:
        if self.unreachable:
            raise ConnectionError("hub unreachable")
        on_disk = len(BudgetLedger(self.org_dir).records())
        self.charges.append((task_id, noise_multiplier, sampling_rate, on_disk, task_id in self.uploads, steps))
        return {"task_id": task_id}


def spec_of(name: str, privacy: dict | None = PRIVACY, datasets=("digits",)) -> ProjectCreate:
    return ProjectCreate.model_validate({
        "name": name, "algorithm": {"name": "classifier", "hyperparameters": {"layers": [64, 8, 10]}},
        "datasets": [f"{ORG}/{d}" for d in datasets], "rounds": 10, "min_nodes": 1,
    } | ({"privacy": privacy} if privacy else {}))


@pytest.fixture
def node(tmp_path: Path):
    x, y = load_digits(return_X_y=True)
    frame = pd.DataFrame(x[:60] / 16.0, columns=[f"p{i}" for i in range(64)]).assign(label=y[:60])
    frame.to_csv(tmp_path / "digits.csv", index=False)
    loaded = load_table(tmp_path / "digits.csv", "label")
    registry = LocalRegistry(tmp_path)
    registry.add("digits", loaded.path, "label", build_card(loaded, "digits", "CC0-1.0",
                                                            privacy_budget=(BUDGET_EPSILON, DELTA)))
    registry.add("open", loaded.path, "label", build_card(loaded, "open", "CC0-1.0"))
    hub = Hub(tmp_path)
    agent = NodeAgent(hub, registry, NodePolicy(ORG, VoteBook(tmp_path), {"digits", "open"}))
    return agent, hub, tmp_path


def deliver(agent: NodeAgent, hub: Hub, spec: ProjectCreate, task_id: int, round_number: int,
            dataset: str = "digits", seed: int | None = None, kind: TaskKind = TaskKind.fit,
            run_id: int = RUN_ID, project_id: int = PROJECT_ID) -> None:
    VoteBook(agent.registry.org_dir).record(project_id, VotedVersion(spec_hash(spec), None, "0" * 32, 1, "0" * 64))
    params = Classifier().init(parse_hyperparams(Classifier(), spec.algorithm.hyperparameters), 64, seed=0)
    task = TaskOut(id=task_id, kind=kind, run_id=run_id, round=round_number, project_id=project_id,
                   spec_hash=spec_hash(spec), spec=spec, dataset=dataset,
                   seed=round_number if seed is None else seed,
                   params_sha256=hashlib.sha256(encode_tensors(params)).hexdigest())
    hub.queue.append((task, params))
    agent.step()


def test_each_round_is_charged_on_disk_before_training_until_the_budget_would_pass(node) -> None:
    agent, hub, org_dir = node
    spec = spec_of("dp")
    for round_number in (1, 2, 3, 4):
        deliver(agent, hub, spec, round_number, round_number)
    assert sorted(hub.uploads) == [1, 2, 3]
    lines = (org_dir / BUDGET_FILE).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["run_id"], r["round"], r["task_id"]) for r in records] == [(RUN_ID, n, n) for n in (1, 2, 3)]
    assert all(r["dataset"] == "digits" and r["project_id"] == PROJECT_ID and r["noise_multiplier"] == SIGMA
               and r["sampling_rate"] == 1.0 and r["delta"] == DELTA for r in records)
    # each charge reached the hub with its line already on disk and before the update was uploaded
    assert [(c[0], c[3], c[4]) for c in hub.charges] == [(1, 1, False), (2, 2, False), (3, 3, False)]
    expected = round_refusal(f"{ORG}/digits", verdict(Budget(BUDGET_EPSILON, DELTA), [Charge(SIGMA)] * 3,
                                                      [Charge(SIGMA)]))
    assert hub.refusals == {4: expected}
    assert expected.startswith("privacy budget of north/digits would pass ε = 2.00")
    assert "spent 1.97, this round 1.07, together 2.31" in expected
    assert agent.budget.spent("digits") == pytest.approx(1.97, abs=0.01)


def test_another_project_shares_the_same_budget(node) -> None:
    agent, hub, _ = node
    deliver(agent, hub, spec_of("first"), 1, 1)
    deliver(agent, hub, spec_of("first"), 2, 2)
    deliver(agent, hub, spec_of("second"), 3, 1, run_id=RUN_ID + 1, project_id=PROJECT_ID + 1)
    deliver(agent, hub, spec_of("second"), 4, 2, run_id=RUN_ID + 1, project_id=PROJECT_ID + 1)
    assert sorted(hub.uploads) == [1, 2, 3] and list(hub.refusals) == [4]


def test_a_charge_survives_a_failure_before_training_and_its_retry_is_not_charged_again(node) -> None:
    agent, hub, org_dir = node
    spec = spec_of("dp")
    hub.unreachable = True
    with pytest.raises(ConnectionError):
        deliver(agent, hub, spec, 1, 1)
    assert len(BudgetLedger(org_dir).records()) == 1 and not hub.uploads
    hub.unreachable = False
    deliver(agent, hub, spec, 1, 1)
    assert len(BudgetLedger(org_dir).records()) == 1 and list(hub.uploads) == [1]
    assert [c[0] for c in hub.charges] == [1]


def test_a_replayed_round_reuses_its_charge_and_other_noise_is_charged_again(node) -> None:
    agent, hub, org_dir = node
    spec = spec_of("dp")
    deliver(agent, hub, spec, 1, 1)
    deliver(agent, hub, spec, 2, 1)  # the hub replays round 1 (new task, the same seed)
    assert [(r.task_id, r.round) for r in BudgetLedger(org_dir).records()] == [(1, 1)]
    assert [c[0] for c in hub.charges] == [1, 2], "the replay's task reports the charge it reuses"
    deliver(agent, hub, spec, 3, 1, seed=99)  # same round, other seed: other noise
    assert [(r.task_id, r.seed) for r in BudgetLedger(org_dir).records()] == [(1, 1), (3, 99)]
    assert sorted(hub.uploads) == [1, 2, 3]


def test_a_project_without_dp_is_refused_on_budgeted_data_only(node) -> None:
    agent, hub, org_dir = node
    plain = spec_of("plain", privacy=None, datasets=("digits", "open"))
    deliver(agent, hub, plain, 1, 1)
    deliver(agent, hub, plain, 2, 1, kind=TaskKind.evaluate)
    deliver(agent, hub, plain, 3, 1, dataset="open")
    assert set(hub.refusals) == {1, 2}
    assert hub.refusals[1].startswith("north/digits has a privacy budget, and a project without differential")
    assert list(hub.uploads) == [3] and not hub.charges and not (org_dir / BUDGET_FILE).exists()


def test_evaluation_and_unbudgeted_data_are_not_charged(node) -> None:
    agent, hub, org_dir = node
    spec = spec_of("dp", datasets=("digits", "open"))
    deliver(agent, hub, spec, 1, 1, dataset="open")
    deliver(agent, hub, spec, 2, 1, kind=TaskKind.evaluate)
    assert list(hub.uploads) == [1] and list(hub.results) == [2]
    assert not hub.charges and not (org_dir / BUDGET_FILE).exists()


def test_a_torn_last_line_is_skipped_and_the_next_charge_starts_a_fresh_line(node) -> None:
    agent, hub, org_dir = node
    spec = spec_of("dp")
    deliver(agent, hub, spec, 1, 1)
    with open(org_dir / BUDGET_FILE, "a") as handle:
        handle.write('{"dataset": "digits", "run_id"')
    assert len(BudgetLedger(org_dir).records()) == 1
    deliver(agent, hub, spec, 2, 2)
    assert [r.round for r in BudgetLedger(org_dir).records()] == [1, 2]


def test_a_dp_sgd_round_charges_its_local_steps_until_the_budget_would_pass(node) -> None:
    agent, hub, org_dir = node
    spec = spec_of("sgd", privacy={"mechanism": "dp_sgd", "clip": 1.0, "epsilon": 6.0, "delta": DELTA})
    plan = RunPlan.of(spec).dp_sgd_plan_of_source(60)
    assert plan.rows == 48 and plan.steps_per_round == 2 and plan.sampling_rate == 0.5  # 12 of 60 validate
    for round_number in range(1, 11):
        deliver(agent, hub, spec, round_number, round_number)
        if hub.refusals:
            break
    records = BudgetLedger(org_dir).records()
    assert records and all((r.noise_multiplier, r.sampling_rate, r.steps) == (plan.noise_multiplier, 0.5, 2)
                           for r in records)
    assert [c[5] for c in hub.charges] == [2] * len(records)
    assert sorted(hub.uploads) == [r.task_id for r in records], "each charged round trained and uploaded"
    refused = len(records) + 1
    assert hub.refusals == {refused: round_refusal(f"{ORG}/digits", verdict(
        Budget(BUDGET_EPSILON, DELTA), [plan.round_charge()] * len(records), [plan.round_charge()]))}
    assert agent.budget.spent("digits") <= BUDGET_EPSILON < verdict(
        Budget(BUDGET_EPSILON, DELTA), [plan.round_charge()] * refused, []).spent
