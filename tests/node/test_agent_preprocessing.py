"""The node's part of federated preprocessing: the statistics of its training rows, then training on rows
transformed by the run's fitted transform (missing values imputed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from consortium.codec import decode_update, encode_tensors
from consortium.fl import preprocessing
from consortium.node.agent import NodeAgent
from consortium.node.policy import NodePolicy, VoteBook, VotedVersion, spec_hash
from consortium.node.registry import LocalRegistry, build_card
from consortium.plan import RunPlan
from consortium.protocol import ProjectCreate, TaskKind, TaskOut
from consortium.tables import load_table

ORG, DATASET, PROJECT_ID, RUN_ID = "org-a", "vitals", 5, 9


class Transport:
    def __init__(self) -> None:
        self.queue: list[tuple[TaskOut, dict | None]] = []
        self.uploads: dict[int, bytes] = {}
        self.refusals: dict[int, str] = {}

    def next_task(self, wait: float, have: str | None = None):
        return self.queue.pop(0) if self.queue else None

    def post_update(self, task_id: int, payload: bytes, wait: float = 0.0, have: str | None = None) -> None:
        self.uploads[task_id] = payload

    def post_refusal(self, task_id: int, reason: str) -> None:
        self.refusals[task_id] = reason


@pytest.fixture
def node(tmp_path: Path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.normal(60, 10, 40), "ward": rng.integers(0, 3, 40).astype(float),
                          "label": rng.integers(0, 2, 40)})
    frame.loc[[3, 17], "age"] = np.nan
    frame.to_csv(tmp_path / "vitals.csv", index=False)
    registry = LocalRegistry(tmp_path)
    registry.add(DATASET, tmp_path / "vitals.csv", "label",
                 build_card(load_table(tmp_path / "vitals.csv", "label"), DATASET, "CC0-1.0"))
    spec = ProjectCreate.model_validate({
        "name": "vitals", "rounds": 1, "validation_fraction": 0.0, "datasets": [f"{ORG}/{DATASET}"],
        "algorithm": {"name": "classifier", "hyperparameters": {"layers": [4, 2], "lr": 0.1}},
        "preprocessing": {"scale": "standardise", "categorical": ["ward"], "impute": "mean"}})
    VoteBook(tmp_path).record(PROJECT_ID, VotedVersion(spec_hash(spec), None, "0" * 32, 1, "0" * 64))
    transport = Transport()
    return NodeAgent(transport, registry, NodePolicy(ORG, VoteBook(tmp_path), {DATASET})), transport, spec, frame


def _task(spec: ProjectCreate, task_id: int, kind: TaskKind, **extra) -> TaskOut:
    return TaskOut(id=task_id, kind=kind, run_id=RUN_ID, round=0 if kind == TaskKind.stats else 1,
                   project_id=PROJECT_ID, spec_hash=spec_hash(spec), spec=spec, dataset=DATASET, seed=1, **extra)


def test_the_node_sends_its_stats_then_trains_on_rows_the_fitted_transform_prepared(node) -> None:
    agent, transport, spec, frame = node
    transport.queue.append((_task(spec, 1, TaskKind.stats, params_sha256=None), None))
    assert agent.step() and not transport.refusals
    tensors, meta = decode_update(transport.uploads[1])
    layout = preprocessing.layout(spec.preprocessing, ["age", "ward"])
    stats = preprocessing.from_tensors(tensors, layout, 40, 64)
    assert meta.num_examples == stats.rows == 40
    assert stats.count.tolist() == [38.0, 40.0]
    assert stats.total[0] == pytest.approx(frame["age"].sum())
    assert sum(stats.values[1].values()) == 40

    fitted = preprocessing.fit(spec.preprocessing, layout, stats)
    assert fitted.output_features == 4
    params = RunPlan.of(spec, 4).init_params()
    digest = hashlib.sha256(encode_tensors(params)).hexdigest()
    transport.queue.append((_task(spec, 2, TaskKind.fit, params_sha256=digest, preprocessing=fitted), params))
    assert agent.step() and not transport.refusals
    update, _ = decode_update(transport.uploads[2])
    assert all(bool(torch.isfinite(t).all()) for t in update.values())


def test_a_fit_task_without_the_fitted_transform_its_spec_asks_for_is_refused(node) -> None:
    agent, transport, spec, _ = node
    params = RunPlan.of(spec, 4).init_params()
    digest = hashlib.sha256(encode_tensors(params)).hexdigest()
    transport.queue.append((_task(spec, 3, TaskKind.fit, params_sha256=digest), params))
    assert agent.step()
    assert "carries no fitted preprocessing" in transport.refusals[3]


def test_a_string_category_column_is_sent_as_codes_with_their_texts(tmp_path: Path) -> None:
    from consortium.fl.categories import code_of

    frame = pd.DataFrame({"age": [50.0, 61.0, 70.0, 45.0], "ward": ["north", "south", "north", "east"],
                          "label": [0, 1, 1, 0]})
    frame.to_csv(tmp_path / "vitals.csv", index=False)
    registry = LocalRegistry(tmp_path)
    loaded = load_table(tmp_path / "vitals.csv", "label", categorical=["ward"])
    registry.add(DATASET, tmp_path / "vitals.csv", "label", build_card(loaded, DATASET, "CC0-1.0"))
    spec = ProjectCreate.model_validate({
        "name": "vitals", "rounds": 1, "validation_fraction": 0.0, "datasets": [f"{ORG}/{DATASET}"],
        "algorithm": {"name": "classifier", "hyperparameters": {"layers": [4, 2], "lr": 0.1}},
        "preprocessing": {"scale": "standardise", "categorical": ["ward"]}})
    VoteBook(tmp_path).record(PROJECT_ID, VotedVersion(spec_hash(spec), None, "0" * 32, 1, "0" * 64))
    transport = Transport()
    agent = NodeAgent(transport, registry, NodePolicy(ORG, VoteBook(tmp_path), {DATASET}))
    transport.queue.append((_task(spec, 1, TaskKind.stats, params_sha256=None), None))
    assert agent.step() and not transport.refusals
    tensors, _ = decode_update(transport.uploads[1])
    layout = preprocessing.layout(spec.preprocessing, ["age", "ward"])
    stats = preprocessing.from_tensors(tensors, layout, 4, 64)
    assert stats.values[1] == {code_of("north"): 2, code_of("south"): 1, code_of("east"): 1}
    assert stats.labels[1] == {code_of(t): t for t in ("north", "south", "east")}
    (ward,) = preprocessing.fit(spec.preprocessing, layout, stats).one_hot
    assert sorted(ward.labels) == ["east", "north", "south"]
