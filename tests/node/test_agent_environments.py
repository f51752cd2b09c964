"""The node agent serves RL tasks in its own registered environment, through an in-memory transport."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from consortium.fl.algorithms.rl import PPO
from consortium.fl.core import parse_hyperparams
from consortium.node.agent import NodeAgent
from consortium.node.environments import EnvironmentRegistry, prepare_environment
from consortium.node.policy import NodePolicy, VoteBook, VotedVersion, spec_hash
from consortium.node.registry import LocalRegistry
from consortium.codec import decode_update, encode_tensors
from consortium.protocol import ProjectCreate, TaskKind, TaskOut, TaskResult

ORG = "north"
HYPERPARAMETERS = {"hidden": [8], "num_envs": 1, "rollout_steps": 32, "epochs": 1, "minibatch_size": 16,
                   "eval_episodes": 2}


class MemoryTransport:
    """Hands out the given tasks with their params and records what the agent sends back."""

    def __init__(self, tasks: list[tuple[TaskOut, dict]]) -> None:
        self.tasks = list(tasks)
        self.updates: dict[int, bytes] = {}
        self.results: dict[int, TaskResult] = {}
        self.refusals: dict[int, str] = {}

    def next_task(self, wait: float, have: str | None = None):
        return self.tasks.pop(0) if self.tasks else None

    def task_params(self, task_id: int) -> bytes:
        raise AssertionError("params travel with the task")

    def post_update(self, task_id: int, payload: bytes, wait: float = 0.0, have: str | None = None) -> None:
        self.updates[task_id] = payload

    def post_result(self, task_id: int, result: TaskResult) -> None:
        self.results[task_id] = result

    def post_refusal(self, task_id: int, reason: str) -> None:
        self.refusals[task_id] = reason


@pytest.fixture
def org_dir(tmp_path: Path) -> Path:
    EnvironmentRegistry(tmp_path).add(
        prepare_environment("cartpole", "CartPole-v1", {"length": 0.6, "gravity": 8.5}, "MIT")
    )
    return tmp_path


def spec(environments: list[str]) -> ProjectCreate:
    return ProjectCreate(name="rl", algorithm={"name": "ppo", "hyperparameters": HYPERPARAMETERS},
                         environments=environments, rounds=1)


def task(
    task_id: int, kind: TaskKind, project: ProjectCreate, params: dict, name: str = "cartpole"
) -> TaskOut:
    return TaskOut(id=task_id, kind=kind, run_id=1, round=1, project_id=7, spec_hash=spec_hash(project),
                   spec=project, dataset=name, params_sha256=_sha(params), seed=11, evaluate_first=False)


def _sha(params: dict) -> str:
    return hashlib.sha256(encode_tensors(params)).hexdigest()


def agent_for(org_dir: Path, transport: MemoryTransport, project: ProjectCreate) -> NodeAgent:
    approvals = VoteBook(org_dir)
    approvals.record(7, VotedVersion(spec_hash(project), None, "0" * 32, 1, "0" * 64))
    registry = LocalRegistry(org_dir)
    environments = EnvironmentRegistry(org_dir)
    policy = NodePolicy(org=ORG, votes=approvals, local_datasets=set(),
                        local_environments={e.name for e in environments.all()})
    return NodeAgent(transport, registry, policy, poll_wait=0.0)


def test_node_trains_and_evaluates_in_its_environment(org_dir: Path) -> None:
    project = spec([f"{ORG}/cartpole", "south/cartpole"])
    algorithm = PPO()
    params = algorithm.init(parse_hyperparams(algorithm, HYPERPARAMETERS), 4, seed=0)
    transport = MemoryTransport([(task(1, TaskKind.fit, project, params), params),
                                 (task(2, TaskKind.evaluate, project, params), params)])
    agent = agent_for(org_dir, transport, project)
    assert agent.step() and agent.step()
    assert transport.refusals == {}
    tensors, meta = decode_update(transport.updates[1])
    assert set(tensors) == set(params)
    assert any(not tensors[name].equal(params[name]) for name in params), "PPO moved the networks"
    assert meta.num_examples == 32
    assert meta.metrics["train_return"] > 0
    result = transport.results[2]
    assert result.num_examples == 2 and result.metrics["mean_return"] > 0


def test_node_refuses_an_environment_it_has_not_registered(org_dir: Path) -> None:
    project = spec([f"{ORG}/acrobot"])
    algorithm = PPO()
    params = algorithm.init(parse_hyperparams(algorithm, HYPERPARAMETERS), 4, seed=0)
    transport = MemoryTransport([(task(1, TaskKind.fit, project, params, name="acrobot"), params)])
    agent_for(org_dir, transport, project).step()
    assert transport.refusals == {1: "environment 'acrobot' is not registered on this node"}
    assert transport.updates == {}
