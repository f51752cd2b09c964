"""The run driver's statistics phase: statistics that do not fit the run's column layout, or datasets whose
columns do not fit the spec, fail the run with a reason naming the node and the feature (not as an internal
error)."""

from __future__ import annotations

import numpy as np
import pytest

from consortium.fl import preprocessing
from consortium.hub.live import Answer
from consortium.hub.phases import Participant, RunFailed
from consortium.hub.preprocess_driver import fitted_from, stats_rules
from consortium.protocol import ProjectCreate

SPEC = ProjectCreate.model_validate({
    "name": "p", "datasets": ["a/d", "b/d"], "rounds": 1,
    "algorithm": {"name": "classifier", "hyperparameters": {"layers": [3, 2]}},
    "preprocessing": {"scale": "standardise", "categorical": ["site"]},
})
SCHEMA = {"features": [{"name": "age", "dtype": "float64"}, {"name": "dose", "dtype": "float64"},
                       {"name": "site", "dtype": "int64"}], "target": {"name": "y", "dtype": "int64"}}


def _answer(task_id: int, rows: np.ndarray, layout: preprocessing.Layout) -> Answer:
    tensors = preprocessing.to_tensors(preprocessing.column_stats(rows, layout, 64))
    return Answer(task_id, "done", tensors=tensors)


def _participant(org: str) -> Participant:
    return Participant(1, f"{org}/d", 1, org, "CC0-1.0", "0" * 64, 10)


def test_statistics_that_do_not_fit_the_layout_fail_the_run_naming_the_node_and_the_feature():
    layout, _ = stats_rules(SPEC, SCHEMA)
    good = _answer(1, np.array([[1.0, 2.0, 0.0], [3.0, 4.0, 1.0]]), layout)
    fitted = fitted_from(SPEC, layout, [(_participant("a"), good), (_participant("b"), good)])
    assert fitted.output_features == 4
    bad = _answer(2, np.array([[1.0, 2.0, 0.0]]), layout)
    del bad.tensors["values.2"]
    with pytest.raises(RunFailed, match=r"statistics from b/d \(b's node\): statistics do not match the "
                                        r"project's columns: missing values.2 \(feature 'site'\)"):
        fitted_from(SPEC, layout, [(_participant("a"), good), (_participant("b"), bad)])


def test_datasets_whose_columns_do_not_fit_the_spec_fail_the_run_naming_the_column():
    renamed = {**SCHEMA, "features": [{"name": "age", "dtype": "float64"}, {"name": "dose", "dtype": "float64"},
                                      {"name": "clinic", "dtype": "int64"}]}
    with pytest.raises(RunFailed, match=r"columns do not fit the spec: preprocessing: unknown feature "
                                        r"column\(s\) \['site'\]"):
        stats_rules(SPEC, renamed)
