"""The open phase of each run, in memory: HTTP handlers hand answers straight to the waiting run driver.

A handler first commits the task's new state to the database (the source of truth, also for recovery) and
then calls :meth:`LivePhase.answer` with what it already decoded and validated, so the driver neither
re-queries the round's tasks on every wake-up nor re-reads the updates from the blob store. An answer
committed where no live phase sees it (another hub replica, a handler racing the round's deadline) is still
found in the database.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from consortium.fl.core import Params

ANSWERED_STATES = ("done", "refused")


@dataclass(frozen=True)
class Answer:
    """A task's committed outcome: ``done`` with its result (and update tensors for fit/init), or refused."""

    task_id: int
    status: str
    result: dict[str, Any] | None = None
    tensors: Params | None = None

    def __post_init__(self) -> None:
        if self.status not in ANSWERED_STATES:
            raise ValueError(f"status: {self.status!r} is not one of {', '.join(ANSWERED_STATES)}")


class LivePhase:
    """The tasks of one run's open phase; :meth:`wait` returns once every one of them has an answer."""

    def __init__(self, task_ids: Iterable[int]) -> None:
        self._changed = threading.Condition()
        self._waiting = set(task_ids)
        self._answers: dict[int, Answer] = {}
        self._closed = False

    def answer(self, answer: Answer) -> bool:
        """Record an answer; False when the task is not one this phase still waits for."""
        with self._changed:
            if self._closed or answer.task_id not in self._waiting:
                return False
            self._waiting.discard(answer.task_id)
            self._answers[answer.task_id] = answer
            self._changed.notify_all()
            return True

    def wait(self, timeout: float) -> bool:
        """Block until every task is answered (True) or ``timeout`` seconds pass (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._waiting, max(0.0, timeout))

    def unanswered(self) -> set[int]:
        with self._changed:
            return set(self._waiting)

    def close(self) -> tuple[dict[int, Answer], set[int]]:
        """Stop taking answers; the answers so far and the tasks still without one."""
        with self._changed:
            self._closed = True
            return dict(self._answers), set(self._waiting)
