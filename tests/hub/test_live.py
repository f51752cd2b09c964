"""In-memory run state: answers wake the waiting driver when all are in; the board hands out open tasks."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.hub import live
from consortium.hub.live import Answer, LivePhase, TaskBoard, TaskRow
from consortium.protocol import TaskKind, TaskOut
from consortium.scenario import digits_spec


def test_wait_returns_once_every_task_is_answered() -> None:
    phase = LivePhase([1, 2, 3])
    for task_id in (3, 1):
        assert phase.answer(Answer(task_id, "done", {"num_examples": 1}))
    assert not phase.wait(0.01)
    assert phase.unanswered() == {2}
    threading.Timer(0.05, phase.answer, [Answer(2, "refused")]).start()
    started = time.monotonic()
    assert phase.wait(5.0)
    assert time.monotonic() - started < 2.0
    answers, late = phase.close()
    assert late == set() and sorted(answers) == [1, 2, 3] and answers[2].status == "refused"


class _CountingCondition(threading.Condition):
    def __init__(self) -> None:
        super().__init__()
        self.wakes = 0

    def notify_all(self) -> None:
        self.wakes += 1
        super().notify_all()


def test_the_waiting_driver_is_woken_once_the_phase_can_end_not_once_per_answer() -> None:
    phase = LivePhase(range(100), needed=50)
    phase._changed = condition = _CountingCondition()
    for task_id in range(99):
        phase.answer(Answer(task_id, "done", {"num_examples": 1}))
    assert condition.wakes == 0
    phase.answer(Answer(99, "done", {"num_examples": 1}))
    assert condition.wakes == 1 and phase.wait(0.0)
    hopeless = LivePhase(range(10), needed=8)
    hopeless._changed = condition = _CountingCondition()
    for task_id in range(3):
        hopeless.answer(Answer(task_id, "refused"))
    assert condition.wakes == 1 and hopeless.wait(0.0)  # the third refusal leaves 7 < 8 that can be done


def test_another_replicas_answers_wake_the_driver_once_every_waited_task_is_announced() -> None:
    """The driver reads another replica's answers from the database in one query when the phase can end,
    not one query per answer; a failed answer (which may leave the phase hopeless) wakes it at once."""
    phase = LivePhase(range(6), needed=2)
    phase._changed = condition = _CountingCondition()
    phase.answer(Answer(0, "done", {"num_examples": 1}))
    phase.nudge(0)  # answered here already: ignored
    for task_id in (1, 2, 3, 4):
        phase.nudge(task_id)
    phase.nudge(99)  # not this phase's
    assert condition.wakes == 0
    phase.answer(Answer(2, "done", {"num_examples": 1}))  # read from the database at a recheck
    phase.nudge(5)
    assert condition.wakes == 1 and not phase.wait(0.0)  # woken to read 1, 3, 4 and 5
    assert not phase.wait(0.0)  # the wake is used up
    phase.nudge(1, failed=True)
    assert condition.wakes == 2
    phase.nudge()
    assert condition.wakes == 3
    last = LivePhase(range(2))
    last._changed = condition = _CountingCondition()
    last.nudge(0)
    assert condition.wakes == 0
    last.answer(Answer(1, "done", {"num_examples": 1}))  # in memory: now only the announced one is left
    assert condition.wakes == 1 and not last.wait(0.0)


def test_announced_answers_also_wake_the_driver_every_read_interval(monkeypatch) -> None:
    """So that the read at the end of a phase is small: a round's answers are read as they come, in a few
    queries."""
    monkeypatch.setattr(live, "READ_EVERY_S", 0.05)
    phase = LivePhase(range(10))
    phase._changed = condition = _CountingCondition()
    phase.nudge(1)
    assert condition.wakes == 0
    time.sleep(0.06)
    phase.nudge(2)
    phase.nudge(3)
    assert condition.wakes == 1


def test_answers_for_other_tasks_twice_or_after_close_are_refused() -> None:
    phase = LivePhase([7, 8])
    tensors = {"w": torch.ones(2)}
    assert not phase.answer(Answer(9, "done"))
    assert phase.answer(Answer(7, "done", {"n": 1}, tensors))
    assert not phase.answer(Answer(7, "done", {"n": 2}))
    answers, late = phase.close()
    assert late == {8} and answers[7].result == {"n": 1} and answers[7].tensors is tensors
    assert not phase.answer(Answer(8, "done"))
    assert phase.close() == (answers, {8})


def test_an_empty_phase_is_complete_at_once() -> None:
    assert LivePhase([]).wait(0.0)


def test_an_answer_needs_a_known_status() -> None:
    with pytest.raises(ValueError, match="status"):
        Answer(1, "dropped")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=12, unique=True), st.randoms(use_true_random=False))
def test_concurrent_answers_are_each_kept_once(task_ids: list[int], rng) -> None:
    phase = LivePhase(task_ids)
    order = task_ids * 2
    rng.shuffle(order)
    accepted: list[int] = []
    lock = threading.Lock()

    def deliver(task_id: int) -> None:
        if phase.answer(Answer(task_id, "done", {"task": task_id})):
            with lock:
                accepted.append(task_id)

    threads = [threading.Thread(target=deliver, args=(t,)) for t in order]
    for thread in threads:
        thread.start()
    assert phase.wait(10.0)
    for thread in threads:
        thread.join()
    answers, late = phase.close()
    assert sorted(accepted) == sorted(task_ids) and late == set()
    assert {t: a.result["task"] for t, a in answers.items()} == {t: t for t in task_ids}


def message(task_id: int) -> TaskOut:
    spec = digits_spec("board", ["north"], rounds=1, min_nodes=1)
    return TaskOut(id=task_id, kind=TaskKind.fit, run_id=1, round=1, project_id=1, spec_hash="0" * 64,
                   spec=spec, dataset="digits", params_sha256=None, seed=task_id)


def row(task_id: int, org_id: int, run_id: int = 1) -> TaskRow:
    return TaskRow(task_id, org_id, run_id, 7, TaskKind.fit.value, "pending", None)


def test_the_board_hands_out_an_orgs_oldest_open_task_until_it_is_withdrawn() -> None:
    board = TaskBoard()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    board.post(row(12, 1), message(12), now + timedelta(seconds=30))
    board.post(row(11, 1), message(11), now + timedelta(seconds=30))
    board.post(row(13, 2), message(13), now + timedelta(seconds=30))
    assert board.take(3, now) is None
    assert board.take(1, now).id == 11
    assert board.take(1, now + timedelta(seconds=1)).id == 11
    assert board.handed_out_at(11) == now and board.handed_out_at(12) is None
    assert board.row(13) == row(13, 2)
    assert board.withdraw([11, 12, 99]) == {11: now}
    assert board.take(1, now) is None and board.message(13).id == 13 and board.row(11) is None


def test_the_board_does_not_hand_out_a_task_past_its_deadline() -> None:
    board = TaskBoard()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    board.post(row(5, 1), message(5), now)
    assert board.take(1, now) is None and board.handed_out_at(5) is None


def test_waiting_for_hand_out_returns_once_every_task_was_taken_or_withdrawn() -> None:
    board = TaskBoard()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for task_id, org_id in ((1, 1), (2, 2), (3, 3)):
        board.post(row(task_id, org_id), message(task_id), now + timedelta(seconds=30))
    assert not board.wait_handed_out([1, 2, 3], timeout=0.01)
    done = threading.Event()
    waiter = threading.Thread(target=lambda: board.wait_handed_out([1, 2, 3], timeout=5.0) and done.set())
    waiter.start()
    board.take(1, now)
    board.take(2, now)
    assert not done.wait(0.05)
    board.withdraw([3])
    waiter.join(1.0)
    assert done.is_set()


def test_an_ended_runs_tasks_leave_the_board_and_others_stay() -> None:
    board = TaskBoard()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    board.post(row(1, 1, run_id=7), message(1), now + timedelta(seconds=30))
    board.post(row(2, 2, run_id=7), message(2), now + timedelta(seconds=30))
    board.post(row(3, 1, run_id=8), message(3), now + timedelta(seconds=30))
    assert board.take(1, now).id == 1
    board.withdraw_run(7)
    assert board.take(1, now).id == 3, "the org's task of the ended run is not handed out again"
    assert board.take(2, now) is None
    assert board.row(1) is None and board.row(2) is None and board.row(3) == row(3, 1, run_id=8)
    assert board.wait_handed_out([1, 2, 3], timeout=0.0)


def test_wait_returns_once_refusals_leave_fewer_than_needed_tasks() -> None:
    phase = LivePhase([1, 2, 3], needed=2)
    assert phase.answer(Answer(1, "refused", reason="no data"))
    assert not phase.wait(0.01) and not phase.hopeless()
    assert phase.answer(Answer(2, "rejected", reason="bad update"))
    assert phase.wait(0.01) and phase.hopeless()
    answers, late = phase.close()
    assert late == {3} and answers[1].reason == "no data"
    assert not LivePhase([1], needed=0).hopeless()
