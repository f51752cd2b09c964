"""Spec checks at proposal: a dataset column of strings (categories) must be one-hot encoded by the spec."""

from __future__ import annotations

import pytest

from consortium.hub.db.models import Dataset, Org
from consortium.hub.services.errors import BadRequest
from consortium.hub.services.projects import plan_of, validate_spec
from consortium.protocol import ProjectCreate

SCHEMA = {"features": [{"name": "age", "dtype": "float64"}, {"name": "site", "dtype": "string"}],
          "target": {"name": "y", "dtype": "int64"}, "categorical": ["site"]}


def _datasets() -> list[Dataset]:
    return [Dataset(name="d", schema=SCHEMA, environment=None, org=Org(name=org)) for org in ("a", "b")]


def _spec(preprocessing: dict | None) -> ProjectCreate:
    return ProjectCreate.model_validate({
        "name": "p", "datasets": ["a/d", "b/d"], "rounds": 1,
        "algorithm": {"name": "classifier", "hyperparameters": {"layers": [4, 2]}},
        **({"preprocessing": preprocessing} if preprocessing else {})})


@pytest.mark.parametrize("preprocessing", [None, {"scale": "standardise"}])
def test_a_string_column_the_spec_does_not_one_hot_is_refused_naming_it(preprocessing):
    spec = _spec(preprocessing)
    with pytest.raises(BadRequest, match=r"preprocessing.categorical: the datasets' column\(s\) site hold strings"):
        validate_spec(spec, plan_of(spec), _datasets())


def test_a_string_column_one_hot_encoded_is_accepted():
    spec = _spec({"scale": "standardise", "categorical": ["site"]})
    validate_spec(spec, plan_of(spec), _datasets())
