"""The task messages nodes receive (:class:`consortium.protocol.TaskOut`): composed once per project version
by the run driver when it opens a phase (the long poll's fast path), or from the database for a task the
driver's board does not hold (:func:`consortium.hub.services.task_claims.claim_many`).

Each carries the hub's signed outcome of the project's passed ``run_project`` proposal, read once per run (per
:class:`ProjectMessages`), so that the node can check the decision itself before it touches data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import PrivateAttr
from sqlalchemy.orm import Session

from consortium.governance.decisions import ProposalStatus
from consortium.hub.db.models import Project
from consortium.hub.services.proposals import project_proposal
from consortium.hub.live import TaskRow
from consortium.preprocessing_wire import FittedPreprocessing
from consortium.protocol import ProjectCreate, TaskKind, TaskOut
from consortium.statuses import TaskStatus
from consortium.task_terms import OWN_FIELDS, terms_json, terms_sha256

if TYPE_CHECKING:
    from consortium.hub.phases import Participant


def evaluates_previous_round(kind: str, round_number: int) -> bool:
    """Fit tasks from round 2 on first evaluate the params they receive (the previous round's aggregate)."""
    return kind == TaskKind.fit.value and round_number > 1


class ComposedTask(TaskOut):
    """A task message whose terms' JSON (the spec and the signed outcome: tens of kilobytes in a consortium
    of a thousand) was rendered and hashed once for all the tasks of its project version; :func:`task_json`
    adds only the task's own fields. A delivery at that size went from a full rendering per node to a copy,
    and to a brief message for a node that holds the terms (:mod:`consortium.task_terms`)."""

    _terms_json: str = PrivateAttr(default="")
    _terms_sha256: str = PrivateAttr(default="")


def task_json(task: TaskOut, known_terms: frozenset[str] = frozenset()) -> str:
    """The task message's JSON, as :meth:`TaskOut.model_dump_json` would render it, or the JSON of its
    :class:`~consortium.protocol.TaskBrief` when its terms are among the ``known_terms`` (SHA-256s)."""
    terms = task._terms_json if isinstance(task, ComposedTask) else ""
    if not terms:
        return task.model_dump_json()
    own = task.model_dump_json(include=OWN_FIELDS)
    if task._terms_sha256 in known_terms:
        return f'{own[:-1]},"terms_sha256":"{task._terms_sha256}"}}'
    return f"{own[:-1]},{terms[1:]}"


@dataclass(frozen=True)
class ProjectMessages:
    """What every task message of one project version carries; :meth:`task` adds one task's own fields."""

    project_id: int
    spec_hash: str
    spec: ProjectCreate
    test_set_sha256: str | None
    outcome: dict[str, Any] | None = None
    outcome_signature: str | None = None
    preprocessing: FittedPreprocessing | None = None
    """The run's fitted transform, once its statistics phase is over (stats tasks go without it)."""
    _terms: dict[bool, tuple[str, str]] = field(default_factory=dict, compare=False, repr=False)
    """The terms' JSON and SHA-256, with and without the fitted transform, rendered at first use."""

    @classmethod
    def of(cls, session: Session, project: Project, spec: ProjectCreate | None = None,
           preprocessing: dict[str, Any] | None = None) -> ProjectMessages:
        """The project's messages, with the signed outcome of its newest ``run_project`` proposal if that
        passed (without one the node refuses the tasks), and the run's fitted ``preprocessing`` if any."""
        proposal = project_proposal(session, project)
        passed = proposal is not None and proposal.status == ProposalStatus.passed.value
        return cls(project.id, project.spec_hash, spec or ProjectCreate.model_validate(project.spec),
                   project.test_set_sha256, proposal.outcome if passed else None,
                   proposal.outcome_signature if passed else None,
                   FittedPreprocessing.model_validate(preprocessing) if preprocessing else None)

    def task(self, *, task_id: int, kind: TaskKind, run_id: int, round_number: int, dataset: str,
             params_sha256: str | None, seed: int) -> TaskOut:
        message = ComposedTask(
            id=task_id, kind=kind, run_id=run_id, round=round_number, project_id=self.project_id,
            spec_hash=self.spec_hash, spec=self.spec, dataset=dataset, params_sha256=params_sha256, seed=seed,
            evaluate_first=evaluates_previous_round(kind.value, round_number),
            test_set_sha256=self.test_set_sha256, outcome=self.outcome,
            outcome_signature=self.outcome_signature,
            preprocessing=self.preprocessing if kind != TaskKind.stats else None,
        )
        with_transform = message.preprocessing is not None
        terms = self._terms.get(with_transform)
        if terms is None:
            rendered = terms_json(message)
            terms = self._terms[with_transform] = (rendered, terms_sha256(rendered))
        message._terms_json, message._terms_sha256 = terms
        return message

    def phase(self, *, run_id: int, kind: TaskKind, round_number: int, params_sha256: str | None,
              task_ids: Sequence[int], participants: Sequence[Participant],
              seeds: Sequence[int]) -> list[tuple[TaskRow, TaskOut]]:
        """The board rows and messages of a phase's new tasks (one per participant, in order)."""
        return [
            (TaskRow(task_id, p.org_id, run_id, p.dataset_id, kind.value, TaskStatus.pending, params_sha256),
             self.task(task_id=task_id, kind=kind, run_id=run_id, round_number=round_number,
                       dataset=p.ref.split("/", 1)[1], params_sha256=params_sha256, seed=seed))
            for task_id, p, seed in zip(task_ids, participants, seeds, strict=True)
        ]
