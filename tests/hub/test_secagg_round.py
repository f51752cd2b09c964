"""Secure aggregation inside the run driver, on a SQLite file and a hub clock that moves only when a test moves
it. Five nodes (t = 3) are played in this process: each trains, sends its metrics without tensors through
the update service, then runs the node's SecAgg session against the round the driver registered (the calls
the node routes make, without HTTP). A stage closes on its last message, or when the test moves the clock
past its deadline once the nodes that stay have answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sqlalchemy import select

from consortium.client import HubError
from consortium.codec import encode_update
from consortium.fl.core import LocalData, Params
from consortium.fl.privacy.secagg.client import SecAggClient
from consortium.fl.privacy.secagg.errors import (
    MalformedMessage,
    MessageError,
    ReplayedMessage,
    WrongRound,
    WrongStage,
)
from consortium.fl.privacy.secagg.quantise import flatten, unflatten
from consortium.fl.privacy.secagg.setup import RoundSetup, plan_round
from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import LedgerEntry, Round, Run
from consortium.hub.db.session import make_engine, migrate, session_factory
from consortium.hub.events import Broker
from consortium.hub.routers.runs import hand_to_driver
from consortium.hub.scheduler import RunDriver
from consortium.hub.secagg import SecAggRound
from consortium.hub.services import hub_identity
from consortium.hub.services import runs as run_service
from consortium.hub.services.hub_key import HubKey
from consortium.hub.state import HubState
from consortium.hub.tensor_cache import TensorCache
from consortium.node.secagg import SecAggSession, delta_of
from consortium.plan import RunPlan
from consortium.protocol import ProjectCreate, TaskKind, TaskOut, TaskResult, UpdateMeta

ORGS = ("a1", "a2", "a3", "a4", "a5")
ROWS, FEATURES, CLASSES = 16, 6, 3
STAGE_S = 10.0
STAGES = ("advertise_keys", "share_keys", "masked_input", "unmask")
GUARD_S = 20.0
"""Real seconds a test waits for anything before calling it stuck."""
START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
DATA = {org: LocalData(torch.randn(ROWS, FEATURES, generator=torch.Generator().manual_seed(i)),
                       torch.randint(0, CLASSES, (ROWS,), generator=torch.Generator().manual_seed(50 + i)))
        for i, org in enumerate(ORGS)}


def spec(privacy: dict[str, Any] | None = None, rounds: int = 1) -> ProjectCreate:
    fields: dict[str, Any] = {
        "name": "secagg",
        "algorithm": {"name": "classifier",
                      "hyperparameters": {"layers": [FEATURES, 4, CLASSES], "lr": 0.1, "batch_size": 8}},
        "strategy": {"name": "fedavg",
                     "secure_aggregation": {"clip_range": 4.0, "stage_timeout_s": STAGE_S}},
        "datasets": [f"{org}/rows" for org in ORGS],
        "rounds": rounds, "min_nodes": 2, "round_timeout": 1000.0, "seed": 3,
    }
    if privacy is not None:
        fields["privacy"] = privacy
    return ProjectCreate.model_validate(fields)


class Clock:
    def __init__(self) -> None:
        self.now = START
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)


def until(check: Callable[[], Any], what: str) -> Any:
    limit = time.monotonic() + GUARD_S
    while time.monotonic() < limit:
        result = check()
        if result:
            return result
        time.sleep(0.002)
    raise AssertionError(f"never happened: {what}")


class Link:
    """What the node routes do for one node, in memory: read the round's publications, hand it messages.
    ``drop_before``: the node's message of that stage never reaches the hub (the node stops there)."""

    def __init__(self, state: HubState, drop_before: str | None, meddle: bool = False) -> None:
        self.state, self.drop_before, self.meddle = state, drop_before, meddle
        self.rounds: list[SecAggRound] = []
        self.setups: list[RoundSetup] = []
        self.refusals: list[MessageError] = []

    def _round(self, task_id: int) -> SecAggRound:
        secagg_round = self.state.secagg.get(task_id)
        if secagg_round is None:
            raise HubError(404, f"no secure aggregation is open for task {task_id}")
        if secagg_round not in self.rounds:
            self.rounds.append(secagg_round)
        return secagg_round

    def secagg_read(self, task_id: int, stage: str, wait: float) -> bytes | None:
        limit = time.monotonic() + min(wait, 0.05)
        while True:
            try:
                body = self._round(task_id).read(task_id, stage)
            except LookupError as exc:
                raise HubError(410, str(exc)) from None
            if body is not None:
                if stage == "setup":
                    self.setups.append(RoundSetup.model_validate_json(body))
                return body.encode()
            if time.monotonic() > limit:
                return None
            time.sleep(0.002)

    def secagg_post(self, task_id: int, stage: str, body: bytes) -> None:
        if stage == self.drop_before:
            raise HubError(410, "the test dropped this node")
        secagg_round = self._round(task_id)
        try:
            secagg_round.receive(task_id, stage, body)
        except MessageError as exc:
            raise HubError(422, str(exc)) from None
        if self.meddle:  # the same message again, for another round, and garbage: each refused by name
            for bad in (body, body.replace(b'"round":', b'"round":1', 1), b'{"stage": "' + stage.encode() + b'"'):
                try:
                    secagg_round.receive(task_id, stage, bad)
                except MessageError as exc:
                    self.refusals.append(exc)


class Node(threading.Thread):
    """One org's node: train, send metrics only, take part in the round's secure aggregation."""

    def __init__(self, state: HubState, org: str, principal: Any, clock: Clock, drop_before: str | None,
                 meddle: bool = False) -> None:
        super().__init__(daemon=True)
        self.state, self.org, self.principal, self.clock = state, org, principal, clock
        self.link = Link(state, drop_before, meddle)
        self.delta: Params | None = None
        self.outcome = ""

    def _task(self, kind: TaskKind) -> TaskOut:
        return until(lambda: (t := self.state.board.take(self.principal.org_id, self.clock.now)) is not None
                     and t.kind == kind and t, f"a {kind.value} task for {self.org}")

    def run(self) -> None:
        task = self._task(TaskKind.fit)
        plan = RunPlan.of(task.spec)
        params = self.state.cache.get(task.params_sha256)
        update = plan.algorithm.local_update(plan.hp, params, DATA[self.org], task.seed)
        if plan.privacy is not None:
            update = replace(update, tensors=plan.privacy.privatise_update(params, update.tensors, task.seed))
        self.delta = delta_of(params, update.tensors)
        meta = UpdateMeta(num_examples=update.num_examples, metrics=update.metrics, compute_s=0.0)
        self._send(task, encode_update({}, meta))
        self.outcome = SecAggSession(self.link, task, 0.05).run(self.delta)

    def _send(self, task: TaskOut, payload: bytes) -> None:
        with self.state.sessions() as session:
            _, done = run_service.submit_update(session, self.state.blobs, self.state.cache, self.principal,
                                                task.id, payload, self.clock.now, rules=self.state.run_rules.get,
                                                known=self.state.board.row(task.id))
        hand_to_driver(self.state, task.run_id, done)

    def evaluate(self) -> None:
        task = self._task(TaskKind.evaluate)
        result = TaskResult(num_examples=ROWS, metrics={"loss": 1.0}, compute_s=0.0)
        with self.state.sessions() as session:
            _, done = run_service.submit_result(session, self.principal, task.id,
                                                result.model_dump_json().encode(), self.clock.now,
                                                rules=self.state.run_rules.get, known=self.state.board.row(task.id))
        hand_to_driver(self.state, task.run_id, done)


class Hub:
    def __init__(self, tmp_path: Path, project: ProjectCreate, seed_run) -> None:
        engine = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
        migrate(engine)
        hub_identity.start(engine, HubKey.generate())
        sessions = session_factory(engine)
        schema = {"features": [{"name": "x", "dtype": "float32", "shape": [FEATURES]}],
                  "target": {"name": "y", "dtype": "int64"}}
        self.run_id, self.orgs = seed_run(sessions, project, ORGS, "rows", schema, ROWS)
        self.clock = Clock()
        blobs = BlobStore(tmp_path / "blobs")
        self.blob_dir = tmp_path / "blobs"
        self.state = HubState(sessions=sessions, blobs=blobs, cache=TensorCache(blobs), broker=Broker(),
                              code_version="t", clock=self.clock, recheck_s=0.002)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=RunDriver(self.state, self.run_id, self.stop), daemon=True)
        self.engine = engine

    def run_row(self) -> Run:
        with self.state.sessions() as session:
            run = session.get(Run, self.run_id)
            session.expunge(run)
            return run

    def first_round(self) -> Round:
        with self.state.sessions() as session:
            row = session.scalars(select(Round).where(Round.run_id == self.run_id, Round.number == 1)).one()
            session.expunge(row)
            return row

    def ledger(self, event_type: str) -> list[dict[str, Any]]:
        with self.state.sessions() as session:
            return list(session.scalars(select(LedgerEntry.payload).where(LedgerEntry.event_type == event_type)))


@pytest.fixture
def hub_for(tmp_path: Path, seed_run) -> Iterator[Callable[[ProjectCreate], Hub]]:
    hubs: list[Hub] = []

    def make(project: ProjectCreate) -> Hub:
        hubs.append(Hub(tmp_path, project, seed_run))
        return hubs[-1]

    yield make
    for hub in hubs:
        hub.stop.set()
        hub.thread.join(GUARD_S)
        hub.engine.dispose()


def play(hub: Hub, drops: dict[str, str], meddle: str | None = None) -> dict[str, Node]:
    """Start the driver and the nodes (``drops``: org -> the stage before whose message it stops); move the
    clock past a stage's deadline once every node that stays has sent its message of that stage."""
    hub.thread.start()
    nodes = {org: Node(hub.state, org, hub.orgs[org], hub.clock, drops.get(org), meddle == org) for org in ORGS}
    for node in nodes.values():
        node.start()
    staying = set(ORGS)
    for stage in STAGES:
        leaving = {org for org in staying if drops.get(org) == stage}
        if not leaving:
            continue
        staying -= leaving
        secagg_round = until(lambda: next((n.link.rounds[0] for n in nodes.values() if n.link.rounds), None),
                             "a round")
        until(lambda: secagg_round.server is not None and len(secagg_round.arrived(stage)) == len(staying),
              f"every staying node's {stage}")
        hub.clock.advance(STAGE_S + 1)
    for node in nodes.values():
        node.join(GUARD_S)
    return nodes


def expected_params(params: Params, setup: RoundSetup, deltas: list[Params]) -> Params:
    """What the round should end with: the plain sum of the quantised deltas, dequantised, over their count."""
    quantiser = setup.quantiser()
    total = np.zeros(setup.config.vector_length, dtype=np.uint32)
    for delta in deltas:
        total += quantiser.quantise(flatten(delta))
    mean = unflatten(quantiser.dequantise_sum(total, len(deltas)) / len(deltas), params)
    return {name: params[name] + mean[name] for name in params}


def finish(hub: Hub, nodes: dict[str, Node], evaluators: list[str] | None = None) -> Params:
    """The final evaluate phase answered by ``evaluators`` (default: every node), the run's final params."""
    for org in nodes if evaluators is None else evaluators:
        nodes[org].evaluate()
    hub.thread.join(GUARD_S)
    run = hub.run_row()
    assert (run.status, run.error) == ("completed", None)
    return hub.state.cache.get(run.params_sha256)


def check_round(hub: Hub, nodes: dict[str, Node], survivors: list[str], silent: tuple[str, ...] = ()) -> None:
    """``silent``: nodes that missed a stage, left out of the final evaluate phase (they never poll again)."""
    params = finish(hub, nodes, [org for org in nodes if org not in silent])
    setup = next(n.link.setups[0] for n in nodes.values() if n.link.setups)
    initial = hub.state.cache.get(hub.ledger("run.initialised")[0]["params_sha256"])
    expected = expected_params(initial, setup, [nodes[org].delta for org in survivors])
    for name in expected:
        assert torch.equal(params[name], expected[name]), name
    metrics = hub.first_round().metrics
    assert metrics["participants"] == sorted(f"{org}/rows" for org in survivors)
    (completed,) = hub.ledger("round.completed")
    assert completed["secure_aggregation"]["threshold"] == 3
    assert completed["secure_aggregation"] == metrics["secure_aggregation"]


def test_the_round_sum_is_the_plain_sum_of_the_quantised_deltas(hub_for) -> None:
    hub = hub_for(spec())
    nodes = play(hub, {})
    check_round(hub, nodes, list(ORGS))
    assert {n.outcome for n in nodes.values()} == {"masked update summed"}
    survived = hub.first_round().metrics["secure_aggregation"]["survived"]
    assert survived == dict.fromkeys(STAGES, 5)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("dropped", [1, 2])
def test_dropouts_within_the_threshold_leave_the_survivors_sum(hub_for, stage: str, dropped: int) -> None:
    hub = hub_for(spec())
    gone = ORGS[:dropped]
    nodes = play(hub, dict.fromkeys(gone, stage))
    # a node that sent its masked input before dropping out is in the sum: its self mask is unmasked by others
    survivors = list(ORGS) if stage == "unmask" else [org for org in ORGS if org not in gone]
    check_round(hub, nodes, survivors, silent=gone)
    summary = hub.first_round().metrics["secure_aggregation"]
    assert summary["dropped_at"] == {stage: sorted(f"{org}/rows" for org in gone)}


def test_a_node_that_dropped_out_gets_no_task_until_it_polls_again(hub_for) -> None:
    hub = hub_for(spec(rounds=2))
    first = play(hub, {"a1": "masked_input"})
    # round 2 goes to the four others only: it closes without the clock reaching its round timeout
    second = {org: Node(hub.state, org, hub.orgs[org], hub.clock, None) for org in ORGS[1:]}
    for node in second.values():
        node.start()
    until(lambda: all(node.link.setups for node in second.values()), "round 2's secure aggregation set up")
    hub.state.seen(hub.orgs["a1"].org_id)  # a1's node is back during round 2: the final evaluation includes it
    for node in second.values():
        node.join(GUARD_S)
    assert all(node.outcome == "masked update summed" for node in second.values())
    finish(hub, {**first, **second})
    one, two = hub.ledger("round.completed")
    assert one["dropped"] == ["a1/rows"] and one["secure_aggregation"]["dropped_at"] == {"masked_input": ["a1/rows"]}
    assert two["participants"] == sorted(f"{org}/rows" for org in ORGS[1:]) and two["dropped"] == []


@pytest.mark.parametrize("stage", STAGES)
def test_below_the_threshold_the_round_aborts_and_reveals_nothing(hub_for, stage: str) -> None:
    hub = hub_for(spec())
    nodes = play(hub, dict.fromkeys(ORGS[:3], stage))
    hub.thread.join(GUARD_S)
    run = hub.run_row()
    assert run.status == "failed" and "secure aggregation aborted" in run.error, run.error
    (aborted,) = hub.ledger("round.secagg_aborted")
    assert f"stage {stage!r}" in aborted["secure_aggregation"]["aborted"]
    assert hub.ledger("round.completed") == []
    assert_nothing_in_clear(hub, nodes)


def assert_nothing_in_clear(hub: Hub, nodes: dict[str, Node]) -> None:
    """No individual quantised vector (nor float delta) in what the hub received or stored."""
    setup = next(n.link.setups[0] for n in nodes.values() if n.link.setups)
    secrets = []
    for node in nodes.values():
        vector = setup.quantiser().quantise(flatten(node.delta))
        secrets += [vector.astype("<u4").tobytes()[:64], flatten(node.delta).to(torch.float32).numpy().tobytes()[:64]]
    stored = b"".join(path.read_bytes() for path in hub.blob_dir.rglob("*") if path.is_file())
    server = nodes[ORGS[-1]].link.rounds[0].server
    received = [m.data if m.stage == "masked_input" else m.model_dump_json().encode() for m in server.transcript]
    assert received
    for secret in secrets:
        assert secret not in stored and not any(secret in message for message in received)


def test_bad_messages_are_refused_by_name_and_the_round_goes_on(hub_for) -> None:
    hub = hub_for(spec())
    nodes = play(hub, {}, meddle="a2")
    check_round(hub, nodes, list(ORGS))
    kinds = [type(exc) for exc in nodes["a2"].link.refusals]
    # the replay is refused as such while its stage is open, as out of stage once the driver closed it; the
    # masked input travels as a binary frame, whose edited header no longer matches its length: malformed
    assert len(kinds) == 12 and kinds.count(WrongRound) == 3 and kinds.count(MalformedMessage) == 5
    assert set(kinds) - {WrongRound, MalformedMessage} <= {ReplayedMessage, WrongStage}
    summary = hub.first_round().metrics["secure_aggregation"]
    assert len(summary["refused"]) == summary["refusals"] == 12


def test_a_round_refuses_a_replayed_or_misaddressed_message() -> None:
    clients = ["7", "8", "9"]
    setup = plan_round(spec().strategy.secure_aggregation, 41, clients, 4, 0)
    secagg_round = SecAggRound(41, {7: 1, 8: 2, 9: 3}, lambda key: None)
    secagg_round.start(setup)
    message = SecAggClient(setup.config, "7").advertise().model_dump_json().encode()
    secagg_round.receive(7, "advertise_keys", message)
    with pytest.raises(ReplayedMessage, match="replayed"):
        secagg_round.receive(7, "advertise_keys", message)
    with pytest.raises(WrongStage, match="posted a message sent by '7'"):
        secagg_round.receive(8, "advertise_keys", message)
    with pytest.raises(WrongStage, match="posted as 'share_keys'"):
        secagg_round.receive(7, "share_keys", message)
    assert secagg_round.arrived("advertise_keys") == {"7"} and len(secagg_round.refused) == 3
    for _ in range(40):
        with pytest.raises(ReplayedMessage):
            secagg_round.receive(7, "advertise_keys", message)
    assert secagg_round.refusals == 43 and len(secagg_round.refused) == 32


def test_distributed_noise_runs_under_secure_aggregation(hub_for) -> None:
    privacy = {"noise": "distributed", "clip": 1.0, "epsilon": 8.0, "delta": 1e-5}
    hub = hub_for(spec(privacy))
    nodes = play(hub, {})
    check_round(hub, nodes, list(ORGS))


def test_a_driver_that_stops_mid_round_leaves_no_round_open(hub_for) -> None:
    hub = hub_for(spec())
    hub.thread.start()
    registered = until(lambda: dict(hub.state.secagg), "the fit phase's round registered")
    assert len(registered) == len(ORGS) and len(set(map(id, registered.values()))) == 1
    (secagg_round,) = set(registered.values())
    hub.stop.set()  # the hub shuts down while the nodes train
    hub.thread.join(GUARD_S)
    assert hub.run_row().status == "running" and hub.state.secagg == {}
    with pytest.raises(LookupError, match="driver stopped"):
        secagg_round.read(next(iter(registered)), "setup")


def test_a_round_in_which_nobody_trained_is_recorded_as_aborted(hub_for) -> None:
    hub = hub_for(spec())
    hub.thread.start()
    until(lambda: dict(hub.state.secagg), "the fit phase's round registered")
    hub.clock.advance(1001)  # every task is dropped
    hub.thread.join(GUARD_S)
    run = hub.run_row()
    assert run.status == "failed" and "0 of the required min_nodes=2" in run.error and hub.state.secagg == {}
    (aborted,) = hub.ledger("round.secagg_aborted")
    assert aborted["secure_aggregation"]["nodes"] == 0
