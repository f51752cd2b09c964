"""The run driver's plain values: who takes part in a run, the phases it opens, how a drive ends early, and
the answers of a phase as updates."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import OperationalError

from consortium.codec import decode_update
from consortium.fl.core import Evaluation, Update
from consortium.hub.live import Answer, LivePhase
from consortium.hub.services import run_store
from consortium.protocol import TaskKind
from consortium.statuses import TaskStatus

if TYPE_CHECKING:
    from consortium.hub.state import HubState

log = logging.getLogger("consortium.scheduler")


class StopRequested(Exception):
    """The hub is shutting down: the driver leaves its run as it is, to be resumed."""


class RunFailed(Exception):
    """The run cannot go on; the message says why."""


LEAVE_RUN = (StopRequested, OperationalError)
"""What a driver stops on leaving its run as it is, not failed: the hub shutting down (resumed at its next
start), or the database gone (e.g. PostgreSQL restarted; :class:`consortium.hub.drivers.Scheduler` drives the
run again from its last checkpoint once the database answers)."""


@dataclass(frozen=True)
class Participant:
    dataset_id: int
    ref: str
    org_id: int
    org: str
    license: str
    sha256: str
    rows: int


@dataclass(frozen=True)
class PhasePlan:
    """Tasks to open: one of ``kind`` per participant, in round ``number`` (a new attempt of it, or the
    existing round ``round_id``)."""

    number: int
    kind: TaskKind
    params_sha: str | None
    participants: list[Participant]
    round_id: int | None = None


@dataclass(frozen=True)
class OpenPhase:
    """A phase of a round whose tasks are out: its live answers and which participant each task went to."""

    number: int
    kind: TaskKind
    round_id: int
    deadline: datetime
    live: LivePhase
    participants: dict[int, Participant]
    opened_at: float
    """Wall-clock time (epoch seconds) just before the phase's transaction."""
    started: float
    """``time.perf_counter()`` at the same moment."""

    def refusals(self, answers: dict[int, Answer]) -> dict[str, str]:
        """Each participant whose task was refused or rejected, with the status and the reason."""
        return {self.participants[i].ref: f"{a.status}: {a.reason or 'no reason given'}"
                for i, a in sorted(answers.items()) if a.status != "done"}

    def hopeless_reason(self, min_nodes: int, refusals: dict[str, str]) -> str:
        """Why the run fails when refusals leave fewer than ``min_nodes`` participants able to answer."""
        return (f"round {self.number}: min_nodes={min_nodes} can no longer be met, {len(refusals)} of the "
                f"{len(self.participants)} nodes given a task cannot take part{refusals_note(refusals)}")


def refusals_note(refusals: dict[str, str]) -> str:
    """Refusals and rejections as a tail for a run failure's reason ("" when none)."""
    return "".join(f"; {ref} {why}" for ref, why in sorted(refusals.items()))



def answers_in_database(state: HubState, run_id: int, task_ids: set[int]) -> list[Answer]:
    """Answers committed for ``task_ids`` (update tensors read back from the blob store)."""
    if not task_ids:
        return []
    with state.sessions() as session:
        rows = run_store.answered_tasks(session, task_ids)
    answers = []
    for row in rows:
        tensors = None
        if row.status == TaskStatus.done and row.update_sha256 is not None:
            try:
                tensors, _ = decode_update(state.blobs.get(row.update_sha256))
            except KeyError:
                log.warning("run %s: the update of task %s is not held by this hub; left out", run_id, row.id)
                continue
        answers.append(Answer(row.id, row.status, row.result, tensors, row.update_sha256, row.error))
    return answers


def updates_of(done: list[tuple[Participant, Answer]]) -> tuple[list[Update], list[Evaluation]]:
    """The updates of answered tasks, and the evaluations of the received params they carried."""
    updates, evaluations = [], []
    for participant, answer in done:
        result = answer.result
        updates.append(Update(tensors=answer.tensors, num_examples=result["num_examples"],
                              metrics=result["metrics"], client_id=f"{participant.dataset_id:012d}"))
        evaluation = result.get("evaluation")
        if evaluation is not None:
            evaluations.append(Evaluation(evaluation["num_examples"], evaluation["metrics"]))
    return updates, evaluations
