"""A stats answer (spec preprocessing) is checked against the run's layout and the source's rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from consortium.fl import preprocessing
from consortium.fl.core import FLError
from consortium.fl.registry import get_algorithm
from consortium.hub.live import TaskRow
from consortium.hub.services.answer_rules import AnswerRules, check_answer_update, stats_rules
from consortium.preprocessing_wire import PreprocessingSpec
from consortium.protocol import ProjectCreate, UpdateMeta

SCHEMA = {"features": [{"name": "age", "dtype": "float64"}, {"name": "site", "dtype": "int64"}]}
SPEC = ProjectCreate.model_validate({
    "name": "p", "algorithm": {"name": "classifier", "hyperparameters": {"layers": [4, 2]}}, "datasets": ["a/d"],
    "rounds": 1, "preprocessing": {"scale": "standardise", "categorical": ["site"]}})
TASK = TaskRow(1, 1, 1, 7, "stats", "claimed", None)


def _rules() -> AnswerRules:
    algorithm = get_algorithm("classifier")
    return AnswerRules(algorithm, None, 2, {7: AnswerRules.source("a/d", "table", 3)}, False,
                       *stats_rules(SPEC, SCHEMA))


def _stats(x: list[list[float]]) -> dict[str, torch.Tensor]:
    layout, _ = stats_rules(SPEC, SCHEMA)
    return preprocessing.to_tensors(preprocessing.column_stats(np.array(x), layout, 64))


def test_honest_stats_are_accepted_and_lies_about_rows_or_categories_are_refused():
    rules = _rules()
    stats = _stats([[40.0, 1.0], [50.0, 2.0], [60.0, 1.0]])
    check_answer_update(rules, TASK, stats, UpdateMeta(num_examples=3, compute_s=0.0), None)
    with pytest.raises(FLError, match="statistics cover 3 rows but the update counts 2"):
        check_answer_update(rules, TASK, stats, UpdateMeta(num_examples=2, compute_s=0.0), None)
    too_many = _stats([[40.0, 1.0], [50.0, 2.0], [60.0, 1.0], [61.0, 1.0]])
    with pytest.raises(FLError, match="a/d registered 3 rows"):
        check_answer_update(rules, TASK, too_many, UpdateMeta(num_examples=4, compute_s=0.0), None)
    stats["values.1"] = torch.tensor([[1.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    with pytest.raises(FLError, match="summing to count"):
        check_answer_update(rules, TASK, stats, UpdateMeta(num_examples=3, compute_s=0.0), None)


def test_a_run_without_preprocessing_takes_no_stats_and_unknown_columns_are_named():
    plain = ProjectCreate.model_validate(SPEC.model_dump(exclude={"preprocessing"}))
    assert stats_rules(plain, SCHEMA) == (None, 0)
    rules = AnswerRules(get_algorithm("classifier"), None, 2, {7: AnswerRules.source("a/d", "table", 3)})
    with pytest.raises(FLError, match="computes no preprocessing statistics"):
        check_answer_update(rules, TASK, {}, UpdateMeta(num_examples=3, compute_s=0.0), None)
    wrong = SPEC.model_copy(update={"preprocessing": PreprocessingSpec(categorical=["region"])})
    with pytest.raises(FLError, match="unknown feature column"):
        stats_rules(wrong, SCHEMA)
