"""A participant lying inside a live run (issue 11 items 2 and 3), end to end on SQLite and PostgreSQL.

A real hub process and two honest node processes; the third org is played by the test over signed HTTP with
that org's key. It answers each of its tasks with a lie (weight 10^12, values at 3e38, NaN/inf tensors or
metrics, wrong shapes or dtypes) and tries to answer the honest orgs' tasks. Every lie is refused with its
reason in the ledger, and each run completes with exactly the model of a reference run in which the third
org only refuses its tasks: the same aggregation inputs (the two honest updates, the same min_nodes, and
seeds that depend on the project seed, round and dataset, not on the project), so the same params bit for bit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import torch

from consortium.client import HubClient, HubError
from consortium.crypto import load_org_identity
from consortium.launch import HubProcess, Process, start_hub, start_node
from consortium.ledger_audit import verify_from_hub
from consortium.codec import encode_tensors
from consortium.protocol import RunProgress, TaskOut
from consortium.scenario import ORGS, DigitsConsortium, digits_spec, propose_and_approve, provision_digits

pytestmark = pytest.mark.e2e

HONEST, ATTACKER = ORGS[:2], ORGS[2]
ROUNDS = 3


@dataclass
class Consortium:
    hub: HubProcess
    digits: DigitsConsortium
    nodes: list[Process]

    def admin(self) -> HubClient:
        return self.hub.client()

    def attacker(self) -> HubClient:
        return HubClient(self.hub.url, identity=load_org_identity(self.digits.org_dirs[ATTACKER]))

    def logs(self) -> str:
        return "\n".join([f"--- hub ---\n{self.hub.log_tail(60)}"]
                         + [f"--- {n.name} ---\n{n.log_tail(20)}" for n in self.nodes])


@pytest.fixture(scope="module")
def consortium(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Consortium]:
    """One hub and the two honest nodes for all runs of a backend."""
    workdir = tmp_path_factory.mktemp("malicious")
    hub = start_hub(workdir / "hub", db_url=module_db_url)
    nodes: list[Process] = []
    try:
        digits = provision_digits(hub, workdir, ORGS)
        nodes = [start_node(hub.url, digits.org_dirs[org], poll_wait=10.0) for org in HONEST]
        with hub.client() as admin:
            admin.wait_online(list(HONEST))
        yield Consortium(hub, digits, nodes)
    finally:
        for node in nodes:
            node.stop()
        hub.stop()


# ---------------------------------------------------------------------------------------------- the attacker

Answer = Callable[[HubClient, TaskOut, dict[str, torch.Tensor]], str]
"""Answers the attacker's task; returns the fragment its refusal must name (the ledger's reason)."""

HEADER = {"num_examples": 50, "metrics": {"train_loss": 0.5}, "compute_s": 0.1}
EVALUATION = {"num_examples": 10, "metrics": {"accuracy": 0.5, "loss": 1.0}, "compute_s": 0.01}


def upload(tensors: dict[str, torch.Tensor], header: dict, reason: str) -> Answer:
    """An update with exactly ``header`` as its JSON (``json.dumps`` writes NaN and Infinity)."""

    def send(client: HubClient, task: TaskOut, params: dict[str, torch.Tensor]) -> str:
        payload = encode_tensors(tensors, {"update": json.dumps(header)})
        expect_rejected(lambda: client.post_update(task.id, payload), "update rejected", reason)
        return reason

    return send


def filled(value: float, dtype: torch.dtype = torch.float32) -> Callable[[dict], dict]:
    return lambda params: {k: torch.full(v.shape, value, dtype=dtype) for k, v in params.items()}


def with_tensors(make: Callable[[dict], dict], header: dict, reason: str) -> Answer:
    def send(client: HubClient, task: TaskOut, params: dict[str, torch.Tensor]) -> str:
        return upload(make(params), header, reason)(client, task, params)

    return send


def result(body: bytes, reason: str) -> Answer:
    """A raw evaluation result body (NaN and Infinity as JavaScript writes them)."""

    def send(client: HubClient, task: TaskOut, params: dict[str, torch.Tensor]) -> str:
        expect_rejected(lambda: client.request("POST", f"/api/node/tasks/{task.id}/result", content=body,
                                               headers={"Content-Type": "application/json"}),
                        "result rejected", reason)
        return reason

    return send


def expect_rejected(send: Callable[[], object], prefix: str, reason: str) -> None:
    """The answer is refused (422, naming ``reason``); the task is closed, so a second try is 410."""
    with pytest.raises(HubError) as info:
        send()
    assert info.value.status_code == 422, info.value.detail
    assert info.value.detail.startswith(prefix) and reason in info.value.detail, info.value.detail
    with pytest.raises(HubError) as again:
        send()
    assert again.value.status_code == 410 and "was rejected" in again.value.detail, again.value.detail


def wrong_shape(params: dict) -> dict:
    name = min(params)
    return params | {name: torch.zeros(params[name].shape[0] + 1, *params[name].shape[1:])}


LIES: dict[str, Answer] = {
    "num_examples 10^12": with_tensors(filled(0.0), HEADER | {"num_examples": 10**12},
                                       f"num_examples = {10**12} is outside [1, "),
    "values 3e38": with_tensors(filled(3e38), HEADER, "above the hub's ceiling 1e+15"),
    "NaN tensor": with_tensors(filled(float("nan")), HEADER, "contains non-finite values"),
    "inf tensor": with_tensors(filled(float("-inf")), HEADER, "contains non-finite values"),
    "NaN metric": with_tensors(dict, HEADER | {"metrics": {"train_loss": float("nan")}},
                               '"train_loss": NaN'),
    "inf metric": with_tensors(dict, HEADER | {"metrics": {"train_accuracy": float("inf")}},
                               '"train_accuracy": Infinity'),
    "NaN evaluation metric": with_tensors(
        dict, HEADER | {"evaluation": EVALUATION | {"metrics": {"accuracy": float("nan")}}},
        '"accuracy": NaN'),
    "wrong shape": with_tensors(wrong_shape, HEADER, "has shape"),
    "wrong dtype": with_tensors(lambda params: {k: v.double() for k, v in params.items()}, HEADER,
                                "has dtype torch.float64, expected torch.float32"),
    "result NaN metric": result(b'{"num_examples": 10, "metrics": {"accuracy": NaN}, "compute_s": 0.1}',
                                "metrics.accuracy: Input should be a finite number"),
    "result Infinity metric": result(b'{"num_examples": 10, "metrics": {"loss": Infinity}, "compute_s": 0.1}',
                                     "metrics.loss: Input should be a finite number"),
    "result num_examples 10^12": result(
        b'{"num_examples": 1000000000000, "metrics": {"accuracy": 1.0}, "compute_s": 0.1}',
        "num_examples = 1000000000000 is outside [1, "),
}

SCENARIOS = {
    # the lies of rounds 1..3, then of the final evaluation
    "weight-ceiling-nan": ("num_examples 10^12", "values 3e38", "NaN tensor", "result NaN metric"),
    "inf-and-metrics": ("inf tensor", "NaN evaluation metric", "inf metric", "result Infinity metric"),
    "shapes-dtypes": ("wrong shape", "wrong dtype", "NaN metric", "result num_examples 10^12"),
}


def answer_others(client: HubClient, task: TaskOut, params: dict[str, torch.Tensor]) -> list[int]:
    """Try to answer the honest orgs' tasks of this phase (the tasks before the attacker's own: tasks are
    opened in dataset order); each try is a 404. Returns the ids tried."""
    others = [task.id - 1, task.id - 2]
    payload = encode_tensors(params, {"update": json.dumps(HEADER)})
    evaluation = json.dumps(EVALUATION).encode()
    for other in others:
        for send in (lambda t=other: client.post_update(t, payload),
                     lambda t=other: client.request("POST", f"/api/node/tasks/{t}/result", content=evaluation,
                                                    headers={"Content-Type": "application/json"}),
                     lambda t=other: client.post_refusal(t, "not mine to refuse")):
            with pytest.raises(HubError) as info:
                send()
            assert info.value.status_code == 404 and f"no task {other}" in info.value.detail
    return others


@dataclass
class Played:
    run_id: int
    progress: RunProgress
    reasons: list[tuple[int, str, str]]
    """(round, task kind, the reason the refusal must name) of each lie, in order."""
    foreign: list[int]
    model_sha256: str


def play(consortium: Consortium, name: str, answer: Callable[[HubClient, TaskOut, dict], str | None],
         meddle: bool = False) -> Played:
    """Start a run of a fresh project and answer the attacker's tasks until the run ends."""
    spec = digits_spec(name, ORGS, rounds=ROUNDS, min_nodes=2, round_timeout=60.0)
    project = propose_and_approve(consortium.digits, spec)
    reasons, foreign = [], []
    with consortium.admin() as admin, consortium.attacker() as attacker:
        run_id = admin.start_run(project["id"])["id"]
        deadline = time.monotonic() + 180
        while admin.run(run_id)["status"] == "running":
            assert time.monotonic() < deadline, consortium.logs()
            delivery = attacker.next_task(wait=1.0)
            if delivery is None:
                continue
            task, params = delivery
            assert task.run_id == run_id and params is not None
            if meddle and not foreign:
                foreign = answer_others(attacker, task, params)
            reason = answer(attacker, task, params)
            if reason is not None:
                reasons.append((task.round, task.kind.value, reason))
        progress = admin.progress(run_id)
        assert progress.run.status == "completed", f"{progress.run.error}\n{consortium.logs()}"
        model_sha256 = admin.model(progress.run.model_id)["params_sha256"]
    return Played(run_id, progress, reasons, foreign, model_sha256)


@pytest.fixture(scope="module")
def reference(consortium: Consortium) -> Played:
    """The same run where the attacker's org only refuses its tasks."""

    def refuse(client: HubClient, task: TaskOut, params: dict) -> None:
        client.post_refusal(task.id, "sitting this run out")

    played = play(consortium, "reference", refuse)
    assert all(r.participants == sorted(f"{o}/digits" for o in HONEST) for r in played.progress.rounds)
    return played


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_lies_are_refused_and_the_run_ends_as_without_them(
    consortium: Consortium, reference: Played, scenario: str
) -> None:
    lies = iter(SCENARIOS[scenario])

    def lie(client: HubClient, task: TaskOut, params: dict) -> str:
        return LIES[next(lies)](client, task, params)

    played = play(consortium, f"attacked-{scenario}", lie, meddle=scenario == "weight-ceiling-nan")
    assert [(r, k) for r, k, _ in played.reasons] == [(1, "fit"), (2, "fit"), (3, "fit"), (3, "evaluate")]

    rounds, expected = played.progress.rounds, reference.progress.rounds
    assert [r.params_sha256 for r in rounds] == [r.params_sha256 for r in expected]
    assert played.model_sha256 == reference.model_sha256
    assert rounds[-1].test == expected[-1].test and rounds[-1].test["accuracy"] > 0.5
    assert [r.federated_eval for r in rounds] == [r.federated_eval for r in expected]
    for rnd in rounds:
        assert rnd.participants == sorted(f"{o}/digits" for o in HONEST)
        assert rnd.dropped == [f"{ATTACKER}/digits"] and rnd.diverged == []

    with consortium.admin() as admin:
        entries = admin.ledger(limit=10_000)
        assert verify_from_hub(admin).ok
    ours = [e for e in entries if e["payload"].get("run_id") == played.run_id]
    rejected = [e for e in ours if e["event_type"] == "task.rejected"]
    assert [(e["payload"]["round"], e["payload"]["kind"]) for e in rejected] == [
        (r, k) for r, k, _ in played.reasons]
    for entry, (_, _, reason) in zip(rejected, played.reasons, strict=True):
        assert entry["actor"] == f"org:{ATTACKER}" and entry["payload"]["org"] == ATTACKER
        assert reason in entry["payload"]["reason"]
    foreign = [e for e in ours if e["event_type"] == "security.foreign_task"]
    assert sorted((e["payload"]["task_id"], e["payload"]["answer"]) for e in foreign) == sorted(
        (t, a) for t in played.foreign for a in ("update", "result", "refusal"))
    assert all(e["actor"] == f"org:{ATTACKER}" for e in foreign)
