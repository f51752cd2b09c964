"""A run driver's phase collection: wait for a phase's answers (in memory, else from the database), drop the
late tasks at the deadline, and keep which nodes were dropped, so later phases leave them out until they poll
again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime

from sqlalchemy.orm import Session

from consortium.hub.live import Answer
from consortium.hub.phases import OpenPhase, Participant, RunFailed, StopRequested, answers_in_database
from consortium.hub.services import ledger, run_store
from consortium.hub.state import HubState
from consortium.statuses import TaskStatus

Fence = Callable[[Session], None]
"""Checked in each of the driver's write transactions (the run's lease, with replicas; see ``hub/leases.py``)."""


def no_fence(_session: Session) -> None:
    """A single hub process drives every run: nothing to check."""


class PhaseCollector:
    """Collects the phases of one run (see the module)."""

    def __init__(self, state: HubState, run_id: int, project_id: int, stop: threading.Event,
                 fence: Fence = no_fence) -> None:
        self.state, self.run_id, self.project_id, self.stop, self.fence = state, run_id, project_id, stop, fence
        self.dropped_at: dict[int, float] = {}
        self.refusals: dict[str, str] = {}
        """The refused and rejected tasks of the phase collected last, by participant."""

    def collect(self, phase: OpenPhase, min_nodes: int) -> tuple[list[tuple[Participant, Answer]], list[Participant]]:
        """Wait until every task of the phase is answered or its deadline passes (late tasks are dropped).

        Returns the done tasks' participants with their answers (in task order) and the participants whose
        task was dropped, refused or rejected. Answers normally arrive in memory; every ``state.recheck_s``,
        when another replica says it committed one (:meth:`LivePhase.nudge`), and at the deadline
        (``state.clock``) the database is asked for those the live phase did not see.
        """
        state = self.state
        try:
            while True:
                remaining = (phase.deadline - state.clock()).total_seconds()
                if phase.live.wait(min(remaining, state.recheck_s)):
                    answers, late = phase.live.close()
                    break
                if self.stop.is_set():
                    raise StopRequested
                for answer in answers_in_database(state, self.run_id, phase.live.unanswered()):
                    phase.live.answer(answer)
                if state.clock() >= phase.deadline:
                    answers, late = phase.live.close()
                    handed_out = state.board.withdraw(late)
                    answers.update((a.task_id, a) for a in self.drop(phase, late, handed_out))
                    break
        finally:
            if state.live.get(self.run_id) is phase.live:
                del state.live[self.run_id]
            state.board.withdraw(phase.participants)
        state.blobs.discard(a.blob for a in answers.values() if a.blob is not None)
        self.refusals = phase.refusals(answers)
        if phase.live.hopeless():
            raise RunFailed(phase.hopeless_reason(min_nodes, self.refusals))
        done = [(phase.participants[i], a) for i, a in sorted(answers.items()) if a.status == TaskStatus.done]
        failed = [phase.participants[i] for i in sorted(phase.participants)
                  if i not in answers or answers[i].status != TaskStatus.done]
        return done, failed

    def drop(self, phase: OpenPhase, task_ids: set[int], handed_out: dict[int, datetime]) -> list[Answer]:
        """Mark the still open ``task_ids`` dropped (with when they were ``handed_out``, and ledger entries,
        in one transaction); the answers of those that were answered after all, just before the deadline."""
        if not task_ids:
            return []
        with self.state.sessions() as session:
            self.fence(session)
            dropped = run_store.drop_tasks(
                session, self.run_id, {t: phase.participants[t].org for t in task_ids}, handed_out,
                ledger.project_scope(self.project_id),
            )
            session.commit()
        self.mark_dropped(phase.participants[task_id] for task_id in dropped)
        return answers_in_database(self.state, self.run_id, task_ids - dropped)

    def mark_dropped(self, participants: Iterable[Participant]) -> None:
        """Leave ``participants``' orgs out of the next phases until their node polls again (it may be dead)."""
        self.dropped_at.update(dict.fromkeys((p.org_id for p in participants), time.monotonic()))

    def active(self, participants: list[Participant]) -> list[Participant]:
        """Datasets of admitted orgs whose node has not been dropped, or has polled again since it was."""
        with self.state.sessions() as session:
            admitted = run_store.admitted(session, {p.org_id for p in participants})
        return [p for p in participants if p.org_id in admitted and (
            self.dropped_at.get(p.org_id) is None
            or self.state.presence.get(p.org_id, 0.0) > self.dropped_at[p.org_id])]
