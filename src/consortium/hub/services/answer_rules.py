"""What the hub accepts from a run's nodes (:class:`AnswerRules`) and the check of an uploaded update
against them: fit and init updates against the model, statistics against the preprocessing layout."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from consortium.fl import preprocessing
from consortium.fl.capabilities import UpdateValueChecker, example_limit
from consortium.fl.core import FLError, check_num_examples, check_update
from consortium.fl.core import Update as FLUpdate
from consortium.hub.db.models import Run
from consortium.hub.live import TaskRow
from consortium.hub.services import projects as project_service
from consortium.hub.services.datasets import TABLE
from consortium.plan import RunPlan
from consortium.preprocessing_wire import FittedPreprocessing
from consortium.protocol import ProjectCreate, TaskKind, UpdateMeta


@dataclass(frozen=True)
class Source:
    """A run's data source as the answer checks see it: ``rows`` is None for an environment."""

    ref: str
    rows: int | None


@dataclass(frozen=True)
class AnswerRules:
    """What the hub accepts from one run's nodes: the algorithm and hyper-parameters that updates are checked
    against, the features of init updates, and each data source (by dataset id), which bounds the examples
    an answer may count. The run driver keeps them in memory; :func:`answer_rules` reads them otherwise."""

    algorithm: Any
    hp: Any
    num_features: int
    sources: Mapping[int, Source]
    secure: bool = False
    """Secure aggregation: a fit update carries metrics only, its tensors go masked through the SecAgg stages."""
    stats_layout: preprocessing.Layout | None = None
    """With spec preprocessing: the raw features stats answers describe (``num_features`` is then the
    transformed width, once the transform is fitted)."""
    max_categories: int = 0

    @staticmethod
    def source(ref: str, kind: str, rows: int) -> Source:
        return Source(ref, rows if kind == TABLE else None)

    def check_examples(self, dataset_id: int, num_examples: int, evaluation: bool, what: str) -> None:
        """FLError unless ``1 <= num_examples <=`` the dataset's rows (an environment: what one task can play)."""
        source = self.sources[dataset_id]
        limit = example_limit(self.algorithm, self.hp, source.rows, evaluation)
        bound = (f"{source.ref} registered {limit} rows" if source.rows is not None
                 else f"{self.algorithm.name} counts at most {limit} per task in {source.ref}")
        check_num_examples(num_examples, limit, what, bound)


def answer_rules(session: Session, run_id: int) -> AnswerRules:
    """:class:`AnswerRules` of a run, from the database."""
    run = session.get(Run, run_id)
    project = run.project
    sources = project_service.project_datasets(session, project)
    spec = ProjectCreate.model_validate(project.spec)
    plan = RunPlan.of(spec)
    schema = sources[0].schema
    width = project_service.num_features(schema)
    if run.preprocessing is not None:
        width = FittedPreprocessing.model_validate(run.preprocessing).output_features
    return AnswerRules(
        plan.algorithm, plan.hp, width,
        {d.id: AnswerRules.source(f"{d.org.name}/{d.name}", d.kind, d.rows) for d in sources},
        plan.secure, *stats_rules(spec, schema),
    )


def stats_rules(spec: ProjectCreate, schema: dict) -> tuple[preprocessing.Layout | None, int]:
    """The layout and category bound stats answers are checked against (None, 0 without preprocessing);
    FLError naming an unknown column."""
    if spec.preprocessing is None:
        return None, 0
    names = project_service.feature_names(schema)
    return preprocessing.layout(spec.preprocessing, names), spec.preprocessing.max_categories


def check_answer_update(rules: AnswerRules, task: TaskRow, tensors: dict, meta: UpdateMeta, params: Any) -> None:
    """FLError unless an update fits the model (names, shapes, dtypes, finite values within the ceiling), the
    algorithm's own value checks, and the examples it and its evaluation count fit the task's dataset."""
    rules.check_examples(task.dataset_id, meta.num_examples, False, f"{task.kind} update")
    if meta.evaluation is not None:
        rules.check_examples(task.dataset_id, meta.evaluation.num_examples, True, "its evaluation")
    if task.kind == TaskKind.stats.value:
        rows = rules.sources[task.dataset_id].rows
        if rules.stats_layout is None or rows is None:
            raise FLError("this run computes no preprocessing statistics")
        stats = preprocessing.from_tensors(tensors, rules.stats_layout, rows, rules.max_categories)
        if stats.rows != meta.num_examples:
            raise FLError(f"statistics cover {stats.rows} rows but the update counts {meta.num_examples}")
        return
    if rules.secure and task.kind == TaskKind.fit.value:
        if tensors:
            raise FLError("under secure aggregation a fit update carries no tensors (the masked delta goes "
                          "through /api/node/secagg); the hub refuses to see it in clear")
        return
    if task.kind == TaskKind.fit.value:
        template = rules.algorithm.update_template(rules.hp, params())
    else:
        template = rules.algorithm.client_init_template(rules.hp, rules.num_features)
    check_update(template, tensors)
    if isinstance(rules.algorithm, UpdateValueChecker):
        rules.algorithm.check_update_values(rules.hp, FLUpdate(tensors, meta.num_examples, meta.metrics))
