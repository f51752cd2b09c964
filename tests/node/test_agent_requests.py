"""The node agent's requests: each round's upload brings the next task; the long poll is the fallback."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from consortium.client import HubError
from consortium.fl.core import LocalData, Params, parse_hyperparams
from consortium.fl.registry import get_algorithm
from consortium.node.agent import NodeAgent
from consortium.node.policy import spec_hash
from consortium.codec import decode_update, encode_tensors
from consortium.protocol import TaskKind, TaskOut, TaskResult
from consortium.scenario import digits_spec

SPEC = digits_spec("agent", ["north"], rounds=2, min_nodes=1)
Delivery = tuple[TaskOut, Params | None]


def params(seed: int) -> tuple[Params, str]:
    algorithm = get_algorithm(SPEC.algorithm.name)
    values = algorithm.init(parse_hyperparams(algorithm, SPEC.algorithm.hyperparameters), 64, seed)
    return values, hashlib.sha256(encode_tensors(values)).hexdigest()


def task(task_id: int, kind: TaskKind, params_sha: str, round_number: int = 1, run_id: int = 1) -> TaskOut:
    return TaskOut(id=task_id, kind=kind, run_id=run_id, round=round_number, project_id=1,
                   spec_hash=spec_hash(SPEC), spec=SPEC, dataset="digits", params_sha256=params_sha,
                   seed=task_id)


class Registry:
    def __init__(self, org_dir: Path) -> None:
        self.org_dir = org_dir

    def load_local(self, name: str, allow_missing: bool = False) -> LocalData:
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(40, 64, generator=generator)
        return LocalData(x, torch.randint(0, 10, (40,), generator=generator))


class Policy:
    org = "north"

    def refusal(self, task: TaskOut) -> str | None:
        return None


@dataclass
class Transport:
    """Scripted hub: long-poll answers and upload answers are queued; every call is recorded."""

    polls: list[Delivery | None] = field(default_factory=list)
    upload_answers: list[Delivery | None | HubError] = field(default_factory=list)
    calls: list[tuple] = field(default_factory=list)

    def next_task(self, wait: float, have: str | None = None) -> Delivery | None:
        self.calls.append(("next_task", wait, have))
        return self.polls.pop(0) if self.polls else None

    def task_params(self, task_id: int) -> bytes:
        raise AssertionError("params always come with the task here")

    def post_update(self, task_id: int, payload: bytes, wait: float = 0.0, have: str | None = None):
        _, meta = decode_update(payload)
        self.calls.append(("post_update", task_id, wait, have, meta.num_examples))
        answer = self.upload_answers.pop(0)
        if isinstance(answer, HubError):
            raise answer
        return answer

    def post_result(self, task_id: int, result: TaskResult) -> None:
        self.calls.append(("post_result", task_id))

    def post_refusal(self, task_id: int, reason: str) -> None:
        self.calls.append(("post_refusal", task_id, reason))


def agent(transport: Transport, org_dir: Path) -> NodeAgent:
    return NodeAgent(transport, Registry(org_dir), Policy(), poll_wait=7.0)


def test_the_upload_answer_brings_the_next_task_without_a_long_poll(tmp_path: Path) -> None:
    first, first_sha = params(0)
    second, second_sha = params(1)
    hub = Transport(polls=[(task(1, TaskKind.fit, first_sha), first)],
                    upload_answers=[(task(2, TaskKind.evaluate, second_sha, 2), second)])
    node = agent(hub, tmp_path)
    assert node.step() and node.step()
    assert [c[0] for c in hub.calls] == ["next_task", "post_update", "post_result"]
    _, task_id, wait, have, num_examples = hub.calls[1]
    assert (task_id, wait, have) == (1, 7.0, first_sha) and num_examples > 0
    assert hub.calls[2] == ("post_result", 2)


def test_without_a_task_in_the_upload_answer_the_node_long_polls(tmp_path: Path) -> None:
    first, first_sha = params(0)
    hub = Transport(polls=[(task(1, TaskKind.fit, first_sha), first)], upload_answers=[None])
    node = agent(hub, tmp_path)
    assert node.step()
    assert not node.step()
    assert [c[0] for c in hub.calls] == ["next_task", "post_update", "next_task"]
    assert hub.calls[2] == ("next_task", 7.0, first_sha)


def test_an_update_the_round_no_longer_needs_is_dropped_and_the_node_polls_again(tmp_path: Path) -> None:
    first, first_sha = params(0)
    hub = Transport(polls=[(task(1, TaskKind.fit, first_sha), first)],
                    upload_answers=[HubError(410, "task 1 was dropped; its round has moved on")])
    node = agent(hub, tmp_path)
    assert node.step()
    assert not node.step()
    assert [c[0] for c in hub.calls] == ["next_task", "post_update", "next_task"]


def test_a_task_gone_once_is_never_trained_again(tmp_path: Path) -> None:
    """A hub that offers a dropped task again (an old hub, a race) gets no second training or upload."""
    first, first_sha = params(0)
    fit = (task(1, TaskKind.fit, first_sha), first)
    hub = Transport(polls=[fit, fit, (task(2, TaskKind.fit, first_sha), first)],
                    upload_answers=[HubError(410, "task 1 was dropped; its round has moved on"), None])
    node = agent(hub, tmp_path)
    assert node.step() and node.step() and node.step()
    uploads = [c[1] for c in hub.calls if c[0] == "post_update"]
    assert uploads == [1, 2], "task 1 ran once; task 2 of the same (still running) run ran"


def test_no_task_of_a_run_the_hub_said_ended_is_run(tmp_path: Path) -> None:
    first, first_sha = params(0)
    ended = HubError(410, "run 1 failed: round 2: 1 of the required min_nodes=2 nodes answered; its task 1 "
                          "is not needed any more", fields={"run_id": 1, "run_status": "failed"})
    hub = Transport(
        polls=[(task(1, TaskKind.fit, first_sha), first), (task(1, TaskKind.fit, first_sha), first),
               (task(2, TaskKind.evaluate, first_sha), first),
               (task(3, TaskKind.fit, first_sha, run_id=2), first)],
        upload_answers=[ended, None],
    )
    seen: list[tuple[int, str]] = []
    node = NodeAgent(hub, Registry(tmp_path), Policy(), poll_wait=7.0,
                     on_task=lambda t, outcome: seen.append((t.id, outcome)))
    for _ in range(4):
        assert node.step()
    assert [c[:2] for c in hub.calls if c[0] != "next_task"] == [("post_update", 1), ("post_update", 3)]
    assert [outcome.split(":")[0] for _, outcome in seen] == ["done", "skipped", "skipped", "done"]
    assert "run 1 failed" in seen[1][1] and "run 1 failed" in seen[2][1]
