"""The run driver's statistics phase (spec ``preprocessing``): before round 1 each node sends the
statistics of its training rows (a ``stats`` task, checked on upload by
:func:`consortium.hub.services.answer_rules.check_answer_update`); the hub combines them, fits the transform
(:mod:`consortium.fl.preprocessing`, the simulator's functions), and stores it with the run, where a
restarted driver, the task messages, the hub's test-set evaluation and the model card find it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session

from consortium import crypto
from consortium.fl import preprocessing
from consortium.fl.core import FLError
from consortium.hub.db.models import Run
from consortium.hub.live import Answer
from consortium.hub.phases import Participant, RunFailed
from consortium.hub.services import ledger
from consortium.hub.services.answer_rules import stats_rules as answer_stats_rules
from consortium.preprocessing_wire import FittedPreprocessing
from consortium.protocol import ProjectCreate


def stats_rules(spec: ProjectCreate, schema: dict) -> tuple[preprocessing.Layout | None, int]:
    """The layout the run reads the nodes' statistics with (:func:`~consortium.hub.services.answer_rules.
    stats_rules`); RunFailed naming the column when the datasets' columns do not fit the spec."""
    try:
        return answer_stats_rules(spec, schema)
    except FLError as exc:
        raise RunFailed(f"preprocessing: the datasets' columns do not fit the spec: {exc}") from exc


def fitted_from(spec: ProjectCreate, layout: preprocessing.Layout | None,
                done: Sequence[tuple[Participant, Answer]]) -> FittedPreprocessing:
    """The transform the answered stats tasks give (their tensors were checked when they were uploaded, against
    the same layout); RunFailed naming the node and the feature when they do not fit it after all, or when the
    combined statistics cannot be fitted."""
    assert spec.preprocessing is not None
    if layout is None:
        raise RunFailed("preprocessing statistics: the run has no column layout to read them with")
    if len(done) < spec.min_nodes:
        raise RunFailed(f"preprocessing statistics: {len(done)} of the required min_nodes={spec.min_nodes} "
                        "nodes answered")
    limit = spec.preprocessing.max_categories
    parts = []
    for participant, answer in done:
        try:
            parts.append(preprocessing.from_tensors(answer.tensors or {}, layout, participant.rows, limit))
        except FLError as exc:
            raise RunFailed(f"preprocessing statistics from {participant.ref} ({participant.org}'s node): "
                            f"{exc}") from exc
    try:
        return preprocessing.fit(spec.preprocessing, layout, preprocessing.combine(parts))
    except FLError as exc:
        raise RunFailed(str(exc)) from exc


def store(sessions: Callable[[], Session], run_id: int, project_id: int, fitted: FittedPreprocessing,
          sources: Sequence[str], fence: Callable[[Session], None] = lambda _session: None) -> None:
    """Keep the fitted transform with the run and say so in the ledger (one transaction, ``fence`` first)."""
    dumped = fitted.model_dump(mode="json")
    with sessions() as session:
        fence(session)
        session.get(Run, run_id).preprocessing = dumped
        ledger.record(session, "run.preprocessing", "hub",
                      {"run_id": run_id, "sources": sorted(sources), "rows": fitted.rows,
                       "output_features": fitted.output_features,
                       "transform_sha256": crypto.sha256_hex(crypto.canonical_json(dumped))},
                      scope=ledger.project_scope(project_id))
        session.commit()
