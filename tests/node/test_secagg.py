"""The node's side of secure aggregation: under a SecAgg spec the agent uploads its metrics without tensors,
then sends its privatised delta only masked; it leaves a round the hub ended without failing the task."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits

from consortium.client import HubError
from consortium.codec import decode_update, encode_tensors
from consortium.fl.privacy.secagg.client import SecAggClient
from consortium.fl.privacy.secagg.messages import parse_client_message
from consortium.fl.privacy.secagg.quantise import flatten
from consortium.fl.privacy.secagg.server import SecAggServer
from consortium.fl.privacy.secagg.setup import plan_round
from consortium.node.agent import NodeAgent
from consortium.node.policy import NodePolicy, VoteBook, VotedVersion, spec_hash
from consortium.node.registry import LocalRegistry, build_card
from consortium.node.secagg import SecAggSession, delta_of
from consortium.plan import RunPlan
from consortium.protocol import ProjectCreate, TaskKind, TaskOut
from consortium.tables import load_table

ORG, DATASET, PROJECT_ID, RUN_ID, TASK_ID, ROUND_ID = "org-a", "digits", 5, 9, 31, 77
SECURE = {"clip_range": 1.0, "stage_timeout_s": 5.0}
PRIVACY = {"noise": "distributed", "clip": 0.5, "epsilon": 8.0, "delta": 1e-5}


class FakeHub:
    """Plays the hub and one other node ("peer") with the real SecAgg server and client, stage by stage."""

    def __init__(self, spec: ProjectCreate, length: int) -> None:
        self.setup = plan_round(spec.strategy.secure_aggregation, ROUND_ID, [str(TASK_ID), "peer"], length, 0)
        self.server = SecAggServer(self.setup.config)
        self.peer = SecAggClient(self.setup.config, "peer")
        self.peer_vector = np.arange(length, dtype=np.uint32)
        self.published: dict[str, str] = {"setup": self.setup.model_dump_json()}
        self.uploads: dict[int, tuple[bytes, float]] = {}
        self.total: np.ndarray | None = None
        self.ended = False

    # the node agent's Transport
    def post_update(self, task_id: int, payload: bytes, wait: float = 0.0, have: str | None = None) -> None:
        self.uploads[task_id] = (payload, wait)

    def post_refusal(self, task_id: int, reason: str) -> None:
        raise AssertionError(f"the node refused: {reason}")

    def secagg_read(self, task_id: int, stage: str, wait: float) -> bytes | None:
        if self.ended:
            raise HubError(410, "round 77's secure aggregation is over")
        published = self.published[stage]
        return (published if isinstance(published, str) else published[str(task_id)]).encode()

    def secagg_post(self, task_id: int, stage: str, body: bytes) -> None:
        self.server.receive(parse_client_message(body))
        if stage == "advertise_keys":
            self.server.receive(self.peer.advertise())
            self.directory = self.server.close_advertise()
            self.published["keys"] = self.directory.model_dump_json()
        elif stage == "share_keys":
            self.server.receive(self.peer.share_keys(self.directory))
            inboxes = self.server.close_share_keys()
            self.inbox = inboxes["peer"]
            self.published["shares"] = {c: inbox.model_dump_json() for c, inbox in inboxes.items()}
        elif stage == "masked_input":
            self.server.receive(self.peer.masked_input(self.inbox, self.peer_vector))
            self.request = self.server.close_masked_input()
            self.published["unmask"] = self.request.model_dump_json()
        else:
            self.server.receive(self.peer.unmask(self.request))
            self.total = self.server.close_unmask()


@pytest.fixture
def node(tmp_path: Path):
    x, y = load_digits(return_X_y=True)
    frame = pd.DataFrame(x[:60] / 16.0, columns=[f"p{i}" for i in range(64)]).assign(label=y[:60])
    frame.to_csv(tmp_path / "digits.csv", index=False)
    registry = LocalRegistry(tmp_path)
    registry.add(DATASET, tmp_path / "digits.csv", "label",
                 build_card(load_table(tmp_path / "digits.csv", "label"), DATASET, "CC0-1.0"))
    spec = ProjectCreate.model_validate({
        "name": "secure-node", "algorithm": {"name": "classifier",
                                             "hyperparameters": {"layers": [64, 8, 10], "lr": 0.1}},
        "strategy": {"name": "fedavg", "secure_aggregation": SECURE}, "privacy": PRIVACY,
        "datasets": [f"{ORG}/{DATASET}", "org-b/digits"], "rounds": 2,
    })
    VoteBook(tmp_path).record(PROJECT_ID, VotedVersion(spec_hash(spec), None, "0" * 32, 1, "0" * 64))
    return registry, spec, tmp_path


def fit_task(spec: ProjectCreate, params: dict) -> TaskOut:
    return TaskOut(id=TASK_ID, kind=TaskKind.fit, run_id=RUN_ID, round=1, project_id=PROJECT_ID,
                   spec_hash=spec_hash(spec), spec=spec, dataset=DATASET, seed=4,
                   params_sha256=hashlib.sha256(encode_tensors(params)).hexdigest())


def test_the_agent_sends_metrics_in_clear_and_its_delta_only_masked(node) -> None:
    registry, spec, org_dir = node
    plan = RunPlan.of(spec, 64, 2)
    params = plan.init_params()
    hub = FakeHub(spec, sum(t.numel() for t in params.values()))
    agent = NodeAgent(hub, registry, NodePolicy(ORG, VoteBook(org_dir), {DATASET}), poll_wait=0.1)
    task = fit_task(spec, params)
    agent._accept_params(task, params)
    agent.handle(task)

    payload, wait = hub.uploads[TASK_ID]
    tensors, meta = decode_update(payload)
    assert tensors == {} and meta.num_examples > 0 and wait == 0.0
    assert hub.server.survivors == (str(TASK_ID), "peer") and hub.total is not None

    update = plan.algorithm.local_update(plan.hp, params, agent._split(task).train, task.seed)
    privatised = agent._privatised(plan, task, params, update)
    expected = hub.setup.quantiser().quantise(flatten(delta_of(params, privatised.tensors)))
    assert np.array_equal(hub.total - hub.peer_vector, expected)
    masked = next(m for m in hub.server.transcript if m.stage == "masked_input" and m.sender == str(TASK_ID))
    # The masked vector travels as raw little-endian words (base64 only in its JSON form): the delta itself
    # must not appear in it.
    assert len(masked.data) == 4 * expected.size and expected.astype("<u4").tobytes() not in masked.data
    assert plan.privacy is not None and plan.privacy.client_std() == pytest.approx(
        plan.privacy.noise_multiplier * 0.5 / 2 ** 0.5)


def test_a_node_leaves_a_round_the_hub_ended_without_failing(node) -> None:
    _, spec, _ = node
    hub = FakeHub(spec, 4)
    hub.ended = True
    outcome = SecAggSession(hub, fit_task(spec, {"w": torch.zeros(4)}), 0.1).run({"w": torch.zeros(4)})
    assert outcome.startswith("left secure aggregation") and "over" in outcome
