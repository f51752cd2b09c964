"""The node agent with SCAFFOLD: it keeps its own c_i on disk, moves it only for accepted updates; with
local DP it clips and noises its update before upload."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits

from consortium.client import HubError
from consortium.fl import scaffold
from consortium.fl.algorithms.classifier import Classifier
from consortium.fl.core import Evaluation, parse_hyperparams
from consortium.fl.privacy.dp_fedavg import add_noise, clip_update, global_norm
from consortium.node.agent import NodeAgent
from consortium.plan import RunPlan
from consortium.node.controls import ControlKey, ControlStore
from consortium.node.policy import NodePolicy, VoteBook, VotedVersion, spec_hash
from consortium.node.registry import LocalRegistry, build_card
from consortium.codec import decode_update, encode_tensors
from consortium.protocol import ProjectCreate, TaskKind, TaskOut
from consortium.tables import load_table

ORG, DATASET, PROJECT_ID, RUN_ID = "org-a", "digits", 5, 9
HYPERPARAMETERS = {"layers": [64, 16, 10], "lr": 0.1, "batch_size": 16, "scaffold": True}


class FakeTransport:
    """Hands the agent one queued task at a time and records its uploads; can answer 410 Gone."""

    def __init__(self) -> None:
        self.queue: list[tuple[TaskOut, dict]] = []
        self.uploads: dict[int, bytes] = {}
        self.refusals: dict[int, str] = {}
        self.gone: set[int] = set()

    def next_task(self, wait: float, have: str | None = None):
        return self.queue.pop(0) if self.queue else None

    def task_params(self, task_id: int) -> bytes:
        raise AssertionError("params always come with the task here")

    def post_update(self, task_id: int, payload: bytes, wait: float = 0.0, have: str | None = None) -> None:
        if task_id in self.gone:
            raise HubError(410, f"task {task_id} was dropped; its round has moved on")
        self.uploads[task_id] = payload

    def post_result(self, task_id: int, result) -> None:
        raise AssertionError("no evaluate tasks here")

    def post_refusal(self, task_id: int, reason: str) -> None:
        self.refusals[task_id] = reason


@pytest.fixture
def node(tmp_path: Path):
    x, y = load_digits(return_X_y=True)
    frame = pd.DataFrame(x[:80] / 16.0, columns=[f"p{i}" for i in range(64)]).assign(label=y[:80])
    frame.to_csv(tmp_path / "digits.csv", index=False)
    loaded = load_table(tmp_path / "digits.csv", "label")
    registry = LocalRegistry(tmp_path)
    registry.add(DATASET, tmp_path / "digits.csv", "label", build_card(loaded, DATASET, "CC0-1.0"))
    spec = ProjectCreate.model_validate({
        "name": "scaffold-node", "algorithm": {"name": "classifier", "hyperparameters": HYPERPARAMETERS},
        "datasets": [f"{ORG}/{DATASET}"], "rounds": 3,
    })
    VoteBook(tmp_path).record(PROJECT_ID, VotedVersion(spec_hash(spec), None, "0" * 32, 1, "0" * 64))
    transport = FakeTransport()
    agent = NodeAgent(transport, registry, NodePolicy(ORG, VoteBook(tmp_path), {DATASET}))
    return agent, transport, spec, tmp_path


def run_task(agent: NodeAgent, transport: FakeTransport, spec: ProjectCreate, task_id: int, round_number: int,
             broadcast: dict) -> None:
    """Deliver a fit task of ``round_number`` with its params (``broadcast``) and let the agent run it."""
    task = TaskOut(id=task_id, kind=TaskKind.fit, run_id=RUN_ID, round=round_number, project_id=PROJECT_ID,
                   spec_hash=spec_hash(spec), spec=spec, dataset=DATASET, seed=round_number,
                   params_sha256=hashlib.sha256(encode_tensors(broadcast)).hexdigest())
    transport.queue.append((task, broadcast))
    assert agent.step()


def uploaded_deltas(transport: FakeTransport, task_id: int) -> dict:
    tensors, _ = decode_update(transport.uploads[task_id])
    return scaffold.split_deltas(tensors)[1]


def test_the_node_keeps_its_control_variate_between_rounds(node) -> None:
    agent, transport, spec, org_dir = node
    hp = parse_hyperparams(Classifier(), HYPERPARAMETERS)
    params = Classifier().init(hp, 64, seed=0)
    store, key = ControlStore(org_dir), ControlKey(PROJECT_ID, spec_hash(spec), RUN_ID, DATASET)

    run_task(agent, transport, spec, 1, 1, scaffold.with_control(params, scaffold.zero_control(params)))
    first = uploaded_deltas(transport, 1)
    after_first = store.load(key, 2)
    assert all(torch.equal(after_first[name], first[name]) for name in params), "c_i = 0 + delta_c"
    assert any(float(t.abs().max()) > 0 for t in after_first.values())

    server_c = {name: t / 3 for name, t in first.items()}
    run_task(agent, transport, spec, 2, 2, scaffold.with_control(params, server_c))
    second = uploaded_deltas(transport, 2)
    after_second = store.load(key, 3)
    for name in params:
        torch.testing.assert_close(after_second[name], after_first[name] + second[name], rtol=0, atol=0)
    assert not torch.equal(after_second["layers.0.weight"], after_first["layers.0.weight"])

    run_task(agent, transport, spec, 3, 2, scaffold.with_control(params, server_c))
    replayed = uploaded_deltas(transport, 3)
    assert all(torch.equal(replayed[n], second[n]) for n in params), "a replay starts from the same c_i"

    transport.gone.add(4)
    run_task(agent, transport, spec, 4, 3, scaffold.with_control(params, server_c))
    assert 4 not in transport.uploads
    kept = store.load(key, 3)
    assert all(torch.equal(kept[n], after_second[n]) for n in params), "a dropped update keeps c_i"


def test_a_scaffold_task_without_the_server_control_is_refused(node) -> None:
    agent, transport, spec, _ = node
    params = Classifier().init(parse_hyperparams(Classifier(), HYPERPARAMETERS), 64, seed=0)
    run_task(agent, transport, spec, 1, 1, params)
    assert "carry no server control variate" in transport.refusals[1]
    assert transport.uploads == {}


def test_an_honest_update_counts_its_training_rows_and_a_diverged_metric_is_refused(node, monkeypatch) -> None:
    """What the hub bounds (examples within the registered rows) an honest node meets; a NaN metric of a
    diverged model is refused with the reason rather than left to time out."""
    agent, transport, spec, _ = node
    params = Classifier().init(parse_hyperparams(Classifier(), HYPERPARAMETERS), 64, seed=0)
    broadcast = scaffold.with_control(params, scaffold.zero_control(params))
    run_task(agent, transport, spec, 1, 1, broadcast)
    _, meta = decode_update(transport.uploads[1])
    assert 1 <= meta.num_examples <= 80 and meta.num_examples == 80 - round(80 * spec.validation_fraction)

    trained = Classifier.local_update
    monkeypatch.setattr(Classifier, "local_update", lambda self, *args, **kwargs: replace(
        trained(self, *args, **kwargs), metrics={"train_loss": float("nan")}))
    run_task(agent, transport, spec, 2, 2, broadcast)
    assert 2 not in transport.uploads
    assert "local error: the local update cannot be sent" in transport.refusals[2]
    assert "train_loss" in transport.refusals[2]


def test_training_that_diverges_is_refused_not_uploaded(node) -> None:
    """Non-finite metrics have no wire form: the node refuses the task with the reason instead of failing."""
    agent, transport, spec, _ = node
    params = Classifier().init(parse_hyperparams(Classifier(), HYPERPARAMETERS), 64, seed=0)
    huge = {name: t * 1e38 for name, t in params.items()}
    run_task(agent, transport, spec, 1, 1, scaffold.with_control(huge, scaffold.zero_control(params)))
    assert "finite" in transport.refusals[1]
    assert transport.uploads == {}


def test_a_diverged_evaluation_is_refused_as_an_fl_error(node, monkeypatch) -> None:
    """The wire schema refuses a NaN metric (pydantic's ValidationError); ``_unsendable`` turns it into the
    FLError that ``handle`` catches, so the node refuses the evaluate task with the reason."""
    agent, transport, spec, _ = node
    params = Classifier().init(parse_hyperparams(Classifier(), HYPERPARAMETERS), 64, seed=0)
    monkeypatch.setattr(Classifier, "evaluate", lambda self, hp, params, data: Evaluation(
        len(data), {"loss": float("nan"), "accuracy": 0.5}))
    task = TaskOut(id=7, kind=TaskKind.evaluate, run_id=RUN_ID, round=3, project_id=PROJECT_ID,
                   spec_hash=spec_hash(spec), spec=spec, dataset=DATASET, seed=3,
                   params_sha256=hashlib.sha256(encode_tensors(params)).hexdigest())
    transport.queue.append((task, params))
    assert agent.step()
    assert transport.refusals[7].startswith("local error: the local evaluation cannot be sent: metrics.loss")


def test_a_dataset_file_changed_since_registration_refuses_the_task_with_the_reason(node) -> None:
    """A changed data file is the owner's problem, not the hub's: the node refuses the task (naming the
    file) instead of retrying it with back-off."""
    agent, transport, spec, tmp_path = node
    frame = pd.read_csv(tmp_path / "digits.csv")
    frame.iloc[:40].to_csv(tmp_path / "digits.csv", index=False)
    params = Classifier().init(parse_hyperparams(Classifier(), HYPERPARAMETERS), 64, seed=0)
    run_task(agent, transport, spec, 1, 1, scaffold.with_control(params, scaffold.zero_control(params)))
    assert "changed since it was registered" in transport.refusals[1]
    assert not transport.uploads


def dp_spec(noise: str) -> ProjectCreate:
    return ProjectCreate.model_validate({
        "name": "dp-node", "datasets": [f"{ORG}/{DATASET}"], "rounds": 3,
        "algorithm": {"name": "classifier", "hyperparameters": {"layers": [64, 16, 10], "lr": 0.1}},
        "privacy": {"noise": noise, "clip": 0.02, "epsilon": 50.0, "delta": 1e-5},
    })


def test_with_local_dp_the_node_uploads_its_delta_clipped_and_noised_from_the_task_seed(node) -> None:
    agent, transport, _, org_dir = node
    spec = dp_spec("local")
    VoteBook(org_dir).record(PROJECT_ID, VotedVersion(spec_hash(spec), None, "0" * 32, 1, "0" * 64))
    hp = parse_hyperparams(Classifier(), spec.algorithm.hyperparameters)
    params = Classifier().init(hp, 64, seed=0)
    run_task(agent, transport, spec, 1, 1, params)
    run_task(agent, transport, spec, 2, 1, params)
    run_task(agent, transport, spec, 3, 2, params)
    uploads = {task: decode_update(transport.uploads[task])[0] for task in (1, 2, 3)}

    privacy = RunPlan.of(spec).privacy
    assert privacy is not None and privacy.noise_multiplier > 0
    train = agent._split(TaskOut(id=1, kind=TaskKind.fit, run_id=RUN_ID, round=1, project_id=PROJECT_ID,
                                 spec_hash=spec_hash(spec), spec=spec, dataset=DATASET, seed=1,
                                 params_sha256=None)).train
    trained = Classifier().local_update(hp, params, train, 1).tensors
    delta = {name: trained[name] - params[name] for name in params}
    assert global_norm(delta) > privacy.clip, "the test needs an update that clipping changes"
    clipped, _ = clip_update(delta, privacy.clip)
    expected = add_noise(clipped, privacy.noise_multiplier * privacy.clip,
                         privacy.client_seed(1, f"{ORG}/{DATASET}"))
    for name in params:
        torch.testing.assert_close(uploads[1][name] - params[name], expected[name], rtol=0, atol=1e-6)
        assert torch.equal(uploads[1][name], uploads[2][name]), "the same task seed draws the same noise"
    assert not torch.equal(uploads[1]["layers.0.weight"], uploads[3]["layers.0.weight"])


def test_with_central_dp_the_node_uploads_its_update_as_trained(node) -> None:
    agent, transport, _, org_dir = node
    spec = dp_spec("central")
    VoteBook(org_dir).record(PROJECT_ID, VotedVersion(spec_hash(spec), None, "0" * 32, 1, "0" * 64))
    hp = parse_hyperparams(Classifier(), spec.algorithm.hyperparameters)
    params = Classifier().init(hp, 64, seed=0)
    run_task(agent, transport, spec, 1, 1, params)
    uploaded = decode_update(transport.uploads[1])[0]
    delta = {name: uploaded[name] - params[name] for name in params}
    assert global_norm(delta) > spec.privacy.clip, "the hub clips and noises central-noise updates"
