"""The run driver on a SQLite file and a hub clock (``HubState.clock``) that moves only when a test moves it.

A phase closes once every task has an answer (an update, a result, a refusal or a rejection) or, at its
deadline (``round_timeout`` after it opened, on the hub clock), without the silent nodes, whose tasks are
dropped; fewer than ``min_nodes`` updates then fail the run (there is no retry: a round gets a new attempt
only when a restarted hub replays it). An answer to a dropped task, or a second answer, is refused and
changes nothing. A fresh hub on the same database abandons the round in flight and replays it from the last
checkpoint, ending with the params an uninterrupted run ends with.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from consortium.codec import encode_update
from consortium.fl.core import LocalData, Params
from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import LedgerEntry, Proposal, Round, Run, Task
from consortium.hub.db.session import make_engine, migrate, session_factory
from consortium.hub.services import hub_identity, proposal_effects
from consortium.hub.services.hub_key import HubKey
from consortium.hub.events import Broker
from consortium.hub.live import Answer
from consortium.hub.routers.runs import Held, deliver_next_task, hand_to_driver
from consortium.hub.scheduler import RunDriver
from consortium.hub.services import runs as run_service
from consortium.hub.services.errors import Conflict, Gone
from consortium.hub.services.identity import Principal
from consortium.hub.state import HubState
from consortium.hub.tensor_cache import TensorCache
from consortium.plan import CLIP_KEY, RunPlan
from consortium.protocol import ProjectCreate, TaskKind, TaskOut, TaskRefusal, TaskResult, UpdateMeta

ORGS = ("north", "south", "east")
ROWS, FEATURES, CLASSES = 20, 8, 3
TIMEOUT = 30.0
START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
HANG_GUARD_S = 5.0
"""Real seconds a test waits for the driver thread before calling it stuck (nothing waits this long)."""

T = TypeVar("T")


def spec(**overrides: Any) -> ProjectCreate:
    fields: dict[str, Any] = {
        "name": "clocked",
        "algorithm": {"name": "classifier",
                      "hyperparameters": {"layers": [FEATURES, 6, CLASSES], "lr": 0.1, "batch_size": 8}},
        "datasets": [f"{org}/rows" for org in ORGS],
        "rounds": 3,
        "min_nodes": 3,
        "round_timeout": TIMEOUT,
        "seed": 11,
    }
    return ProjectCreate.model_validate(fields | overrides)


ADAM = {"strategy": {"name": "fedavg", "server_optimizer": {"name": "adam", "options": {"lr": 0.05}}}}
ADAPTIVE = {"privacy": {"noise": "central", "clip": 0.5, "epsilon": 1000.0, "delta": 1e-5, "noise_multiplier": 1.0,
                        "adaptive_clip": {"target_quantile": 0.5, "learning_rate": 0.5, "count_noise_std": 2.0}}}
CASES = {"plain": {}, "adam": ADAM, "adaptive_clip": ADAPTIVE}


def _rows(index: int) -> LocalData:
    generator = torch.Generator().manual_seed(100 + index)
    return LocalData(torch.randn(ROWS, FEATURES, generator=generator),
                     torch.randint(0, CLASSES, (ROWS,), generator=generator))


DATA = {org: _rows(i) for i, org in enumerate(ORGS)}


def naive(moment: datetime) -> datetime:
    """A stored time as UTC without its zone (SQLite keeps none)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


class Clock:
    """Hub time, moved by hand; counts the reads, so a test can wait until the driver has looked at it."""

    def __init__(self) -> None:
        self.now = START
        self._read = threading.Condition()
        self.reads = 0

    def __call__(self) -> datetime:
        with self._read:
            self.reads += 1
            self._read.notify_all()
            return self.now

    def advance(self, seconds: float) -> None:
        with self._read:
            self.now += timedelta(seconds=seconds)

    def looked_at(self, times: int = 3) -> None:
        """Return once the clock was read ``times`` more times: three reads by a driver that is closing a
        round or waiting for answers include one comparison of the current time with the deadline."""
        with self._read:
            target = self.reads + times
            looked = self._read.wait_for(lambda: self.reads >= target, HANG_GUARD_S)
        assert looked, "the driver stopped looking at the clock"


class Wakeups(Broker):
    """The hub's broker that also wakes the test thread: the driver notifies after each of its commits."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()
        self._count = 0

    def notify_many(self, keys: Iterable[str]) -> None:
        super().notify_many(keys)
        with self._changed:
            self._count += 1
            self._changed.notify_all()

    def until(self, check: Callable[[], T | None], what: str) -> T:
        """``check()`` once it gives something, re-checked after each notification."""
        limit = time.monotonic() + HANG_GUARD_S
        while True:
            with self._changed:
                seen = self._count
            result = check()
            if result:
                return result
            with self._changed:
                if not self._changed.wait_for(lambda: self._count != seen, limit - time.monotonic()):
                    raise AssertionError(f"the driver never got to: {what}")


class Hub:
    """One hub process's state on the database file, its driver thread, and the nodes played by the test."""

    def __init__(
        self, sessions: sessionmaker[Session], blob_dir: Path, run_id: int, orgs: dict[str, Principal]
    ) -> None:
        self.clock, self.wakeups = Clock(), Wakeups()
        blobs = BlobStore(blob_dir)
        self.state = HubState(sessions=sessions, blobs=blobs, cache=TensorCache(blobs), broker=self.wakeups,
                              code_version="t", clock=self.clock, recheck_s=0.002)
        self.run_id, self.orgs = run_id, orgs
        self.stop = threading.Event()
        self.thread = threading.Thread(target=RunDriver(self.state, run_id, self.stop), daemon=True)

    def start(self) -> Hub:
        self.thread.start()
        return self

    def crash(self) -> None:
        """The driver stops where it is (its round stays open in the database), and this hub is gone."""
        self.stop.set()
        self.thread.join(HANG_GUARD_S)
        assert not self.thread.is_alive()

    def task(self, org: str) -> TaskOut:
        """The org's open task, as the long poll hands it out."""
        principal = self.orgs[org]
        return self.wakeups.until(lambda: self.state.board.take(principal.org_id, self.clock.now),
                                  f"a task for {org}")

    def answer(self, org: str, task: TaskOut, payload: bytes | None = None) -> Answer:
        """Send ``payload`` (default: the org's honest answer) through the node routes' service calls."""
        payload = payload if payload is not None else self.honest(org, task)
        principal, row = self.orgs[org], self.state.board.row(task.id)
        with self.state.sessions() as session:
            if task.kind == TaskKind.evaluate:
                _, done = run_service.submit_result(session, principal, task.id, payload, self.clock.now,
                                                    rules=self.state.run_rules.get, known=row)
            else:
                _, done = run_service.submit_update(session, self.state.blobs, self.state.cache, principal,
                                                    task.id, payload, self.clock.now,
                                                    rules=self.state.run_rules.get, known=row)
        hand_to_driver(self.state, task.run_id, done)
        return done

    def refuse(self, org: str, task: TaskOut) -> None:
        with self.state.sessions() as session:
            _, done = run_service.refuse(session, self.orgs[org], task.id, TaskRefusal(reason="no"),
                                         self.clock.now, known=self.state.board.row(task.id))
        hand_to_driver(self.state, task.run_id, done)

    def honest(self, org: str, task: TaskOut, seed_shift: int = 0) -> bytes:
        """The org's local update of the task's params (or, for an evaluate task, a plain result)."""
        if task.kind == TaskKind.evaluate:
            result = TaskResult(num_examples=ROWS, metrics={"loss": 1.0}, compute_s=0.0)
            return result.model_dump_json().encode()
        plan = RunPlan.of(task.spec)
        params = self.state.cache.get(task.params_sha256)
        update = plan.algorithm.local_update(plan.hp, params, DATA[org], task.seed + seed_shift)
        meta = UpdateMeta(num_examples=update.num_examples, metrics=update.metrics, compute_s=0.0)
        return encode_update(update.tensors, meta)

    def answer_round(self, orgs: tuple[str, ...] = ORGS) -> None:
        for org in orgs:
            self.answer(org, self.task(org))

    def finish(self, orgs: tuple[str, ...] = ORGS) -> Params:
        """Answer every task of ``orgs`` until the run ends; its final params."""
        while True:
            posted = self.wakeups.until(lambda: self._posted(orgs) or self.run().status != "running",
                                        "the next phase or the end of the run")
            if posted is True:
                break
            for org, task in posted:
                self.answer(org, task)
        self.thread.join(HANG_GUARD_S)
        run = self.run()
        assert (run.status, run.error) == ("completed", None)
        return self.state.cache.get(run.params_sha256)

    def _posted(self, orgs: tuple[str, ...]) -> list[tuple[str, TaskOut]]:
        found = [(org, self.state.board.take(self.orgs[org].org_id, self.clock.now)) for org in orgs]
        return [(org, task) for org, task in found if task is not None]

    # ---------------------------------------------------------------------------------------------- reads

    def run(self) -> Run:
        with self.state.sessions() as session:
            run = session.get(Run, self.run_id)
            session.expunge(run)
            return run

    def rounds(self, number: int) -> list[Round]:
        """The attempts of round ``number``, oldest first."""
        with self.state.sessions() as session:
            rows = list(session.scalars(
                select(Round).where(Round.run_id == self.run_id, Round.number == number)
                .order_by(Round.attempt)
            ))
            session.expunge_all()
            return rows

    def tasks(self, round_id: int) -> dict[str, Task]:
        with self.state.sessions() as session:
            rows = {t.org.name: t for t in session.scalars(select(Task).where(Task.round_id == round_id))}
            session.expunge_all()
            return rows

    def ledger(self, event_type: str) -> list[dict[str, Any]]:
        with self.state.sessions() as session:
            return list(session.scalars(
                select(LedgerEntry.payload).where(LedgerEntry.event_type == event_type)
                .order_by(LedgerEntry.seq)
            ))


def provision(
    db_file: Path, project: ProjectCreate, seed: Callable[..., tuple[int, dict[str, Principal]]]
) -> tuple[sessionmaker[Session], int, dict[str, Principal]]:
    """A migrated database: the three orgs, each with its 20-row dataset, the approved project and a run."""
    engine = make_engine(f"sqlite:///{db_file}")
    migrate(engine)
    hub_identity.start(engine, HubKey.generate())
    sessions: sessionmaker[Session] = session_factory(engine)
    schema = {"features": [{"name": "x", "dtype": "float32", "shape": [FEATURES]}],
              "target": {"name": "y", "dtype": "int64"}}
    run_id, orgs = seed(sessions, project, ORGS, "rows", schema, ROWS)
    return sessions, run_id, orgs


@pytest.fixture
def hub_for(tmp_path: Path, seed_run) -> Iterator[Callable[..., Hub]]:
    """``hub_for(project)``: a hub on a fresh SQLite file with a run of ``project`` (driver not started)."""
    hubs: list[Hub] = []

    def make(project: ProjectCreate) -> Hub:
        sessions, run_id, orgs = provision(tmp_path / "hub.db", project, seed_run)
        hubs.append(Hub(sessions, tmp_path / "blobs", run_id, orgs))
        return hubs[-1]

    yield make
    for hub in hubs:
        hub.stop.set()
        if hub.thread.is_alive():
            hub.thread.join(HANG_GUARD_S)
        hub.state.sessions.kw["bind"].dispose()


_REFERENCE: dict[str, Params] = {}


@pytest.fixture
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, seed_run) -> Callable[[str, ProjectCreate], Params]:
    """The final params of an uninterrupted run of a project in which every node answers every task once."""

    def params(key: str, project: ProjectCreate) -> Params:
        if key not in _REFERENCE:
            where = tmp_path_factory.mktemp("uninterrupted")
            sessions, run_id, orgs = provision(where / "hub.db", project, seed_run)
            _REFERENCE[key] = Hub(sessions, where / "blobs", run_id, orgs).start().finish()
            sessions.kw["bind"].dispose()
        return _REFERENCE[key]

    return params


def assert_same(got: Params, expected: Params) -> None:
    assert set(got) == set(expected)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


# ---------------------------------------------------------------------------------------------- closing


def test_a_round_closes_as_soon_as_every_node_has_answered(hub_for) -> None:
    """The clock never moves: every phase closes on its last answer, none waits for a deadline."""
    hub = hub_for(spec(rounds=2)).start()
    hub.finish()
    assert hub.clock.now == START
    for number in (1, 2):
        (closed,) = hub.rounds(number)
        assert closed.status == "closed" and naive(closed.closed_at) == naive(START)
        assert closed.metrics["participants"] == [f"{org}/rows" for org in sorted(ORGS)]
        assert closed.metrics["dropped"] == []
        assert {t.status for t in hub.tasks(closed.id).values()} == {"done"}
    assert hub.ledger("task.dropped") == []
    assert naive(hub.run().finished_at) == naive(START)


def test_refusals_close_the_round_at_once_and_too_few_updates_fail_it(hub_for) -> None:
    hub = hub_for(spec(min_nodes=2)).start()
    hub.answer("north", hub.task("north"))
    hub.refuse("south", hub.task("south"))
    hub.refuse("east", hub.task("east"))
    run = hub.wakeups.until(lambda: (r := hub.run()).status != "running" and r, "the end of the run")
    assert hub.clock.now == START
    assert (run.status, run.error) == (
        "failed", "round 1: min_nodes=2 can no longer be met, 2 of the 3 nodes given a task cannot take part; "
                  "east/rows refused: no; south/rows refused: no")


def test_refusals_that_leave_too_few_nodes_fail_the_run_before_the_others_answer(hub_for) -> None:
    """Two of three refuse with min_nodes=2: the run fails at once with their reasons, without waiting for
    the third node or the round's deadline; the third's task is cancelled."""
    hub = hub_for(spec(min_nodes=2)).start()
    hub.task("north")
    hub.refuse("south", hub.task("south"))
    hub.refuse("east", hub.task("east"))
    run = hub.wakeups.until(lambda: (r := hub.run()).status != "running" and r, "the end of the run")
    assert hub.clock.now == START
    assert run.status == "failed" and "east/rows refused: no; south/rows refused: no" in run.error
    (opened,) = hub.rounds(1)
    assert sorted(t.status for t in hub.tasks(opened.id).values()) == ["cancelled", "refused", "refused"]
    assert len(hub.ledger("task.refused")) == 2


def test_with_min_nodes_answers_the_round_still_waits_for_its_deadline(hub_for) -> None:
    """Two of three answered (min_nodes=2): the round waits for the silent node until ``round_timeout`` has
    passed on the hub clock, then closes without it and drops its task."""
    hub = hub_for(spec(min_nodes=2, rounds=2)).start()
    hub.answer_round(("north", "south"))
    hub.task("east")
    hub.clock.advance(TIMEOUT - 0.001)
    hub.clock.looked_at()
    (first,) = hub.rounds(1)
    assert first.status == "open" and hub.tasks(first.id)["east"].status == "pending"
    assert hub.run().current_round == 0

    hub.clock.advance(0.001)
    (first,) = hub.wakeups.until(lambda: (r := hub.rounds(1))[0].status == "closed" and r, "round 1's close")
    assert naive(first.closed_at) == naive(START + timedelta(seconds=TIMEOUT))
    assert first.metrics["participants"] == ["north/rows", "south/rows"]
    assert first.metrics["dropped"] == ["east/rows"]
    tasks = hub.tasks(first.id)
    assert {org: t.status for org, t in tasks.items()} == {
        "north": "done", "south": "done", "east": "dropped"}
    assert [(e["task_id"], e["org"]) for e in hub.ledger("task.dropped")] == [(tasks["east"].id, "east")]

    hub.finish(("north", "south"))
    (second,) = hub.rounds(2)
    assert set(hub.tasks(second.id)) == {"north", "south"}, "a dropped node is left out until it polls again"
    assert second.metrics["dropped"] == []


def suspend(hub: Hub, org: str) -> None:
    """The effect of a passed ``suspend_org`` proposal about ``org``, as the proposal's settlement writes it."""
    with hub.state.sessions() as session:
        proposal_effects.apply(session, Proposal(id=77, kind="suspend_org", org_id=hub.orgs[org].org_id,
                                                 decided_at=hub.clock.now))
        session.commit()


def test_a_suspended_orgs_tasks_are_cut_and_its_round_closes_without_waiting(hub_for) -> None:
    """East is suspended mid-round: its open task is closed as refused with the reason (a ``task.cut``
    entry), the round closes on the others' answers at once (min_nodes=2), and no later phase gives east a
    task."""
    hub = hub_for(spec(min_nodes=2, rounds=2)).start()
    hub.answer_round(("north", "south"))
    east = hub.task("east")
    suspend(hub, "east")
    (first,) = hub.wakeups.until(lambda: (r := hub.rounds(1))[0].status == "closed" and r, "round 1's close")
    assert hub.clock.now == START, "the round did not wait for its deadline"
    assert first.metrics["participants"] == ["north/rows", "south/rows"] and first.metrics["dropped"] == [
        "east/rows"]
    cut = hub.tasks(first.id)["east"]
    assert (cut.id, cut.status, cut.error) == (east.id, "refused", "east was suspended (proposal 77)")
    assert hub.ledger("task.cut") == [{"run_id": hub.run_id, "task_id": east.id, "org": "east",
                                      "reason": "east was suspended (proposal 77)"}]
    with pytest.raises(Gone):
        hub.answer("east", east)
    hub.finish(("north", "south"))
    (second,) = hub.rounds(2)
    assert set(hub.tasks(second.id)) == {"north", "south"}


def test_a_suspension_that_leaves_too_few_nodes_fails_the_round_at_once(hub_for) -> None:
    hub = hub_for(spec(min_nodes=3)).start()
    hub.answer_round(("north", "south"))
    hub.task("east")
    suspend(hub, "east")
    run = hub.wakeups.until(lambda: (r := hub.run()).status != "running" and r, "the end of the run")
    assert hub.clock.now == START
    assert (run.status, run.error) == (
        "failed", "round 1: min_nodes=3 can no longer be met, 1 of the 3 nodes given a task cannot take part; "
                  "east/rows refused: east was suspended (proposal 77)")


def test_too_few_answers_by_the_deadline_fail_the_run_without_a_retry(hub_for) -> None:
    hub = hub_for(spec(min_nodes=2)).start()
    hub.answer("north", hub.task("north"))
    hub.clock.advance(TIMEOUT)
    run = hub.wakeups.until(lambda: (r := hub.run()).status != "running" and r, "the end of the run")
    assert (run.status, run.error) == (
        "failed", "round 1: 1 of the required min_nodes=2 nodes answered within round_timeout=30.0s")
    assert naive(run.finished_at) == naive(START + timedelta(seconds=TIMEOUT)) and run.current_round == 0
    (first,) = hub.rounds(1)
    assert {o: t.status for o, t in hub.tasks(first.id).items()} == {
        "north": "done", "south": "dropped", "east": "dropped"}
    assert sorted(e["org"] for e in hub.ledger("task.dropped")) == ["east", "south"]
    assert [e["reason"] for e in hub.ledger("run.failed")] == [run.error]
    assert hub.rounds(2) == []
    hub.thread.join(HANG_GUARD_S)
    assert hub.state.board.take(hub.orgs["south"].org_id, hub.clock.now) is None


# ---------------------------------------------------------------------------------------------- late, twice


def test_an_answer_to_a_dropped_task_is_refused_and_changes_nothing(hub_for) -> None:
    hub = hub_for(spec(min_nodes=2, rounds=2)).start()
    hub.answer_round(("north", "south"))
    late = hub.task("east")
    payload = hub.honest("east", late)
    hub.clock.advance(TIMEOUT)
    hub.wakeups.until(lambda: hub.run().current_round == 1, "round 1's checkpoint")
    before, (first,) = hub.run(), hub.rounds(1)

    with pytest.raises(Gone, match=f"task {late.id} was dropped; its round has moved on"):
        hub.answer("east", late, payload)
    assert not hub.state.live[hub.run_id].answer(Answer(late.id, "done", {"num_examples": ROWS}, {}))
    after, (again,) = hub.run(), hub.rounds(1)
    assert (after.current_round, after.params_sha256) == (before.current_round, before.params_sha256)
    assert again.metrics == first.metrics
    stored = hub.tasks(first.id)["east"]
    assert (stored.status, stored.update_sha256, stored.result) == ("dropped", None, None)


def test_a_second_answer_from_the_same_node_counts_once(hub_for, uninterrupted) -> None:
    """North answers round 1 twice (the second time with other tensors): the hub refuses the second, the
    driver's live phase ignores it, and the run ends with the params of a run where everyone answered once."""
    project = spec()
    hub = hub_for(project).start()
    task = hub.task("north")
    first = hub.answer("north", task)
    with pytest.raises(Conflict, match=f"task {task.id} already has a result"):
        hub.answer("north", task, hub.honest("north", task, seed_shift=1))
    hand_to_driver(hub.state, hub.run_id, first)
    hub.answer_round(("south", "east"))
    assert_same(hub.finish(), uninterrupted("plain", project))
    (closed,) = hub.rounds(1)
    assert closed.metrics["participants"] == [f"{org}/rows" for org in sorted(ORGS)]


# ---------------------------------------------------------------------------------------------- replay


@pytest.mark.parametrize("case", list(CASES))
def test_a_fresh_hub_on_the_same_database_resumes_mid_round_and_ends_with_the_same_params(
    hub_for, uninterrupted, case: str
) -> None:
    """Round 1 closes, round 2 has one answer when the hub goes down. The next hub (new state, same
    database and blob directory) abandons round 2, replays it from round 1's checkpoint (with the server
    optimiser's state, or adaptive clipping's norm) and ends bitwise where an uninterrupted run ends."""
    project = spec(**CASES[case])
    crashed = hub_for(project).start()
    crashed.answer_round()
    crashed.answer("north", crashed.task("north"))
    crashed.wakeups.until(lambda: crashed.run().current_round == 1, "round 1's checkpoint")
    crashed.crash()
    checkpoint = crashed.run()
    assert (checkpoint.status, checkpoint.current_round) == ("running", 1)
    assert (checkpoint.server_state_sha256 is not None) == (case != "plain")

    resumed = Hub(crashed.state.sessions, crashed.state.blobs.root, crashed.run_id, crashed.orgs).start()
    final = resumed.finish()
    assert_same(final, uninterrupted(case, project))
    after_round_1 = resumed.state.cache.get(checkpoint.params_sha256)
    assert not any(torch.equal(final[name], after_round_1[name]) for name in final), "rounds 2-3 did nothing"
    lost, replayed = resumed.rounds(2)
    assert (lost.attempt, lost.status, replayed.attempt, replayed.status) == (1, "abandoned", 2, "closed")
    assert {o: t.status for o, t in resumed.tasks(lost.id).items()} == {
        "north": "done", "south": "cancelled", "east": "cancelled"}
    assert [(e["round"], e["attempt"]) for e in resumed.ledger("round.abandoned")] == [(2, 1)]
    assert [len(resumed.rounds(n)) for n in (1, 3)] == [1, 1]
    if case == "adaptive_clip":  # the hub clipped centrally at a norm that moved every round
        clips = [float(resumed.state.cache.get(sha)[CLIP_KEY])
                 for sha in (checkpoint.server_state_sha256, resumed.run().server_state_sha256)]
        assert 0.5 != clips[0] != clips[1]


# ---------------------------------------------------------------------------------------------- long poll


def test_the_long_poll_hands_out_no_task_past_its_deadline_on_the_hub_clock(hub_for) -> None:
    """With no driver of this process holding it (the task comes from the database), a task is handed out
    until its deadline on ``HubState.clock`` and not after."""
    hub = hub_for(spec()).start()
    task = hub.task("north")
    hub.crash()
    north = hub.orgs["north"]

    def poll():
        return asyncio.run(deliver_next_task(hub.state, north, 0.0, Held(task.params_sha256)))

    hub.clock.advance(TIMEOUT - 1)
    delivered = poll()
    assert delivered is not None and TaskOut.model_validate_json(delivered.body).id == task.id
    hub.clock.advance(1)
    assert poll() is None
