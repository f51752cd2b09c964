"""The open phase of each run, in memory: HTTP handlers hand answers straight to the waiting run driver.

A handler first commits the task's new state to the database (the source of truth, also for recovery) and
then calls :meth:`LivePhase.answer` with what it already decoded and validated, so the driver neither
re-queries the round's tasks on every wake-up nor re-reads the updates from the blob store. An answer
committed where no live phase sees it (another hub replica, a handler racing the round's deadline) is still
found in the database.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from consortium.fl.core import Params
from consortium.protocol import TaskOut
from consortium.statuses import ANSWERED_TASK_STATES


@dataclass(frozen=True)
class Answer:
    """A task's committed outcome: ``done`` with its result (and update tensors for fit/init), refused by the
    node, or rejected by the hub (its answer failed the checks)."""

    task_id: int
    status: str
    result: dict[str, Any] | None = None
    tensors: Params | None = None
    blob: str | None = None
    """Digest of the staged update upload these tensors came from (discarded once the round has them)."""
    reason: str | None = None
    """Why the node refused the task, or why the hub rejected its answer."""

    def __post_init__(self) -> None:
        if self.status not in ANSWERED_TASK_STATES:
            raise ValueError(f"status: {self.status!r} is not one of {', '.join(ANSWERED_TASK_STATES)}")


READ_EVERY_S = 0.1
"""How often another replica's answers wake a driver to read them before its phase can end."""


class LivePhase:
    """The tasks of one run's open phase; :meth:`wait` returns once every one of them has an answer, or once
    so many were refused or rejected that fewer than ``needed`` can still be done (:meth:`hopeless`)."""

    def __init__(self, task_ids: Iterable[int], needed: int = 0) -> None:
        self._changed = threading.Condition()
        self._waiting = set(task_ids)
        self._total = len(self._waiting)
        self._needed = needed
        self._failed = 0
        self._answers: dict[int, Answer] = {}
        self._closed = False
        self._nudged = False
        self._announced: set[int] = set()
        """Waited-for tasks another replica said it committed an answer to (the driver has yet to read them)."""
        self._woken_at = time.monotonic()

    def answer(self, answer: Answer) -> bool:
        """Record an answer; False when the task is not one this phase still waits for."""
        with self._changed:
            if self._closed or answer.task_id not in self._waiting:
                return False
            self._waiting.discard(answer.task_id)
            self._announced.discard(answer.task_id)
            self._answers[answer.task_id] = answer
            self._failed += answer.status != "done"
            if not self._waiting or self._hopeless():  # the driver wakes once, not once per answer
                self._changed.notify_all()
            elif len(self._announced) == len(self._waiting):  # the rest were answered through other replicas
                self._nudged = True
                self._changed.notify_all()
            return True

    def wait(self, timeout: float) -> bool:
        """Block until every task is answered or the phase is :meth:`hopeless` (True), or ``timeout`` seconds
        pass or :meth:`nudge` is called (False)."""
        with self._changed:
            self._changed.wait_for(lambda: not self._waiting or self._hopeless() or self._nudged, max(0.0, timeout))
            self._nudged = False
            return not self._waiting or self._hopeless()

    def nudge(self, task_id: int | None = None, failed: bool = False) -> None:
        """Another hub replica committed an answer to ``task_id`` (``failed``: a refusal or a rejection).
        :meth:`wait` returns early, for the driver to read the announced answers from the database in one
        query: at once when every task it still waits for has been announced or the answer failed (the
        phase may be hopeless), else at most every ``READ_EVERY_S`` (so that the last read of a round is
        small, and a round's reads few); ``task_id`` None wakes it now."""
        with self._changed:
            now = time.monotonic()
            if task_id is not None:
                if task_id not in self._waiting:
                    return
                self._announced.add(task_id)
                can_end = failed or len(self._announced) == len(self._waiting)
                if not can_end and now - self._woken_at < READ_EVERY_S:
                    return
            self._woken_at = now
            self._nudged = True
            self._changed.notify_all()

    def hopeless(self) -> bool:
        """Whether the refused and rejected answers leave fewer than ``needed`` tasks that can be done."""
        with self._changed:
            return self._hopeless()

    def _hopeless(self) -> bool:
        return self._total - self._failed < self._needed

    def expects(self, task_id: int) -> bool:
        """Whether the phase still takes an answer to ``task_id``."""
        with self._changed:
            return not self._closed and task_id in self._waiting

    def unanswered(self) -> set[int]:
        with self._changed:
            return set(self._waiting)

    def close(self) -> tuple[dict[int, Answer], set[int]]:
        """Stop taking answers; the answers so far and the tasks still without one."""
        with self._changed:
            self._closed = True
            return dict(self._answers), set(self._waiting)


class TaskRow(NamedTuple):
    """What the node endpoints need of a task's row: read with one query, or known from the board."""

    id: int
    org_id: int
    run_id: int
    dataset_id: int
    kind: str
    status: str
    params_sha256: str | None


@dataclass
class _Posted:
    row: TaskRow
    message: TaskOut
    deadline: datetime
    handed_out_at: datetime | None = None


class TaskBoard:
    """The open tasks of this process's run drivers, per organisation: the long poll's query-free fast path.

    Handing a task out is not written to the database at once: when it was handed out goes into the task's
    row with its answer (or with its drop), in transactions that happen anyway.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handed_out = threading.Condition(self._lock)
        self._tasks: dict[int, _Posted] = {}
        self._by_org: dict[int, set[int]] = {}
        self._waiting: dict[int, set[int]] = {}
        """Per :meth:`wait_handed_out` call: its tasks not handed out (nor withdrawn) yet."""
        self._waits = itertools.count()

    def post(self, row: TaskRow, message: TaskOut, deadline: datetime) -> None:
        with self._lock:
            self._tasks[message.id] = _Posted(row, message, deadline)
            self._by_org.setdefault(row.org_id, set()).add(message.id)

    def take(self, org_id: int, now: datetime) -> TaskOut | None:
        """The org's oldest task still before its deadline (the same one again until it is answered)."""
        with self._lock:
            open_ids = [i for i in self._by_org.get(org_id, ()) if self._tasks[i].deadline > now]
            if not open_ids:
                return None
            posted = self._tasks[min(open_ids)]
            if posted.handed_out_at is None:
                posted.handed_out_at = now
                self._out(posted.message.id)
            return posted.message

    def _out(self, task_id: int) -> None:
        """``task_id`` was handed out or left the board: wake the waits it was the last one of (lock held)."""
        done = False
        for remaining in self._waiting.values():
            if task_id in remaining:
                remaining.discard(task_id)
                done = done or not remaining
        if done:
            self._handed_out.notify_all()

    def wait_handed_out(self, task_ids: Iterable[int], timeout: float) -> bool:
        """Block until each of ``task_ids`` was handed out or left the board (True), or ``timeout`` passed."""
        with self._handed_out:
            remaining = {i for i in task_ids if i in self._tasks and self._tasks[i].handed_out_at is None}
            key = next(self._waits)
            self._waiting[key] = remaining
            try:
                return self._handed_out.wait_for(lambda: not remaining, timeout)
            finally:
                del self._waiting[key]

    def message(self, task_id: int) -> TaskOut | None:
        with self._lock:
            posted = self._tasks.get(task_id)
            return posted.message if posted is not None else None

    def row(self, task_id: int) -> TaskRow | None:
        """The task's row as its phase opened it (its status may have moved on since: writes must check)."""
        with self._lock:
            posted = self._tasks.get(task_id)
            return posted.row if posted is not None else None

    def handed_out_at(self, task_id: int) -> datetime | None:
        with self._lock:
            posted = self._tasks.get(task_id)
            return posted.handed_out_at if posted is not None else None

    def withdraw_run(self, run_id: int) -> None:
        """Take every task of ``run_id`` off the board: its run ended, so no node may take one again."""
        with self._lock:
            for task_id in [i for i, p in self._tasks.items() if p.row.run_id == run_id]:
                self._remove(task_id)
            self._handed_out.notify_all()

    def withdraw(self, task_ids: Iterable[int]) -> dict[int, datetime]:
        """Take tasks off the board; when each of them that was handed out was."""
        handed_out = {}
        with self._lock:
            for task_id in task_ids:
                posted = self._remove(task_id)
                if posted is not None and posted.handed_out_at is not None:
                    handed_out[task_id] = posted.handed_out_at
        return handed_out

    def _remove(self, task_id: int) -> _Posted | None:
        """Take one task off the board and its org's index (lock held)."""
        posted = self._tasks.pop(task_id, None)
        if posted is not None:
            ids = self._by_org[posted.row.org_id]
            ids.discard(task_id)
            if not ids:
                del self._by_org[posted.row.org_id]
            self._out(task_id)
        return posted
