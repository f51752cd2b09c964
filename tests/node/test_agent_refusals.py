"""The node agent tells the hub at once why it cannot train a task, and knows what its org registers while it
runs (the registry is read again when its file changes)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from sklearn.datasets import load_digits

from consortium.codec import encode_tensors
from consortium.fl.algorithms.classifier import Classifier
from consortium.fl.core import parse_hyperparams
from consortium.node.agent import MAX_REASON, NodeAgent
from consortium.node.policy import NodePolicy, VoteBook, VotedVersion, spec_hash
from consortium.node.registry import LocalRegistry, build_card
from consortium.protocol import ProjectCreate, TaskKind, TaskOut
from consortium.tables import load_table

ORG, DATASET, PROJECT_ID = "org-a", "digits", 5
HYPERPARAMETERS = {"layers": [64, 16, 10], "lr": 0.1, "batch_size": 16}


class FakeTransport:
    """Hands the agent one queued task at a time; records its uploads and refusals."""

    def __init__(self) -> None:
        self.queue: list[tuple[TaskOut, dict]] = []
        self.uploads: dict[int, bytes] = {}
        self.refusals: dict[int, str] = {}

    def next_task(self, wait: float, have: str | None = None):
        return self.queue.pop(0) if self.queue else None

    def post_update(self, task_id: int, payload: bytes, wait: float = 0.0, have: str | None = None) -> None:
        self.uploads[task_id] = payload

    def post_refusal(self, task_id: int, reason: str) -> None:
        self.refusals[task_id] = reason


@pytest.fixture
def setup(tmp_path: Path):
    x, y = load_digits(return_X_y=True)
    frame = pd.DataFrame(x[:60] / 16.0, columns=[f"p{i}" for i in range(64)]).assign(label=y[:60])
    frame.to_csv(tmp_path / "digits.csv", index=False)
    spec = ProjectCreate.model_validate({
        "name": "refusals", "algorithm": {"name": "classifier", "hyperparameters": HYPERPARAMETERS},
        "datasets": [f"{ORG}/{DATASET}"], "rounds": 2,
    })
    VoteBook(tmp_path).record(PROJECT_ID, VotedVersion(spec_hash(spec), None, "0" * 32, 1, "0" * 64))
    registry = LocalRegistry(tmp_path)
    transport = FakeTransport()
    agent = NodeAgent(transport, registry, NodePolicy(ORG, VoteBook(tmp_path), registry))
    return agent, transport, registry, spec, tmp_path


def register(registry: LocalRegistry, path: Path) -> None:
    registry.add(DATASET, path, "label", build_card(load_table(path, "label"), DATASET, "CC0-1.0"))


def deliver(agent: NodeAgent, transport: FakeTransport, spec: ProjectCreate, task_id: int) -> None:
    params = Classifier().init(parse_hyperparams(Classifier(), HYPERPARAMETERS), 64, seed=0)
    task = TaskOut(id=task_id, kind=TaskKind.fit, run_id=1, round=1, project_id=PROJECT_ID,
                   spec_hash=spec_hash(spec), spec=spec, dataset=DATASET, seed=1,
                   params_sha256=hashlib.sha256(encode_tensors(params)).hexdigest())
    transport.queue.append((task, params))
    assert agent.step()


def test_a_dataset_registered_after_the_node_started_is_used_at_the_next_task(setup) -> None:
    agent, transport, registry, spec, org_dir = setup
    deliver(agent, transport, spec, 1)
    assert transport.refusals == {1: "dataset 'digits' is not registered on this node"}
    register(LocalRegistry(org_dir), org_dir / "digits.csv")  # another process's registry object
    deliver(agent, transport, spec, 2)
    assert 2 in transport.uploads and 2 not in transport.refusals


def test_a_data_file_edited_after_registration_is_refused_with_the_reason(setup) -> None:
    agent, transport, registry, spec, org_dir = setup
    register(registry, org_dir / "digits.csv")
    frame = pd.read_csv(org_dir / "digits.csv")
    frame.loc[3, "p5"] = 0.25
    frame.to_csv(org_dir / "digits.csv", index=False)
    deliver(agent, transport, spec, 1)
    assert transport.refusals[1].startswith("local error: dataset 'digits':")
    assert "changed since it was registered" in transport.refusals[1]


def test_an_unexpected_training_fault_is_refused_at_once_and_a_long_reason_is_cut(setup, monkeypatch) -> None:
    agent, transport, registry, spec, org_dir = setup
    register(registry, org_dir / "digits.csv")

    def broken(*args, **kwargs):
        raise IndexError("target 12 is out of bounds " + "x" * 3000)

    monkeypatch.setattr(Classifier, "local_update", broken)
    deliver(agent, transport, spec, 1)
    reason = transport.refusals[1]
    assert reason.startswith("local error: IndexError: target 12 is out of bounds")
    assert len(reason) == MAX_REASON and reason.endswith("…")


def test_the_registry_is_parsed_again_only_when_its_file_changes(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "label": [0, 1]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    writer, reader = LocalRegistry(tmp_path), LocalRegistry(tmp_path)
    assert DATASET not in reader
    register(writer, tmp_path / "d.csv")
    first = reader._read()
    assert DATASET in reader and reader._read() is first
    writer.add("other", tmp_path / "d.csv", "label",
               build_card(load_table(tmp_path / "d.csv", "label"), "other", "CC0-1.0"))
    assert [entry.name for entry in reader.all()] == [DATASET, "other"]


def test_a_broken_registry_file_refuses_the_task_with_the_reason(setup) -> None:
    agent, transport, registry, spec, org_dir = setup
    (org_dir / "datasets.json").write_text("{not json")
    deliver(agent, transport, spec, 1)
    assert transport.refusals[1].startswith("local error: ") and "datasets.json: not valid JSON" in transport.refusals[1]
