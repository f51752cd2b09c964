"""The preprocessing section of a project spec: strict, validated, and not combined with DP or RL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from consortium.preprocessing_wire import PreprocessingSpec
from consortium.protocol import ProjectCreate

BASE = {"name": "p", "algorithm": {"name": "logistic_regression"}, "datasets": ["a/b"], "rounds": 1}


def test_a_spec_without_preprocessing_keeps_its_json_and_one_with_it_validates():
    assert "preprocessing" not in ProjectCreate.model_validate(BASE).model_dump(mode="json")
    spec = ProjectCreate.model_validate({**BASE, "preprocessing": {"scale": "standardise"}})
    assert spec.preprocessing == PreprocessingSpec(scale="standardise")


@pytest.mark.parametrize(("section", "message"), [
    ({"scale": "zscore"}, "scale"),
    ({"scale": "standardise", "standardize": True}, "Extra inputs are not permitted"),
    ({}, "does nothing"),
    ({"scale": "none", "columns": ["a"]}, "scale is 'none'"),
    ({"scale": "min-max", "columns": ["a"], "categorical": ["a"]}, "both scaled and categorical"),
    ({"categorical": ["a", "a"]}, "listed twice"),
    ({"impute": "median"}, "impute"),
    ({"categorical": ["a"], "max_categories": 1}, "max_categories"),
])
def test_bad_sections_are_refused_naming_the_field(section, message):
    with pytest.raises(ValidationError, match=message):
        ProjectCreate.model_validate({**BASE, "preprocessing": section})


def test_preprocessing_is_refused_with_differential_privacy():
    privacy = {"epsilon": 5.0, "delta": 1e-5, "clip": 1.0}
    with pytest.raises(ValidationError, match="not differentially private"):
        ProjectCreate.model_validate({**BASE, "privacy": privacy, "preprocessing": {"scale": "standardise"}})
