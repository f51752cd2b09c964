"""DP synthetic data on the node: the generator takes the declared columns only, keeps to their declared
domains, and its noise multiplier spends at most the epsilon asked (re-accounted here); a domain that does not
cover the table is refused naming the columns or values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from consortium.fl.privacy.budget import Charge, epsilon_of
from consortium.node.synthetic import SynthesisError, load_domains, synthesise

DELTA = 1e-6


def people(n: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, n)
    return pd.DataFrame({"age": age, "sex": rng.choice(["F", "M"], n),
                         "diagnosis": np.where(age > 60, "heart", rng.choice(["flu", "none"], n))})


@pytest.fixture
def domains(tmp_path: Path):
    path = tmp_path / "domain.json"
    path.write_text(json.dumps({"age": {"min": 0, "max": 100, "bins": 10, "integer": True},
                                "sex": {"values": ["F", "M"]}, "diagnosis": {"values": ["flu", "none", "heart"]}}))
    return load_domains(path)


@pytest.mark.parametrize("epsilon", [0.5, 2.0])
def test_synthetic_rows_keep_the_domain_and_spend_at_most_epsilon(domains, epsilon: float) -> None:
    rows, release = synthesise(people(), domains, epsilon, DELTA, seed=1)
    assert list(rows.columns) == ["age", "sex", "diagnosis"] and len(rows) > 0
    assert rows["age"].between(0, 100).all() and set(rows["sex"]) <= {"F", "M"}
    assert set(rows["diagnosis"]) <= {"flu", "none", "heart"}
    assert release.measurements == 2 and release.marginals == [["age", "sex"], ["sex", "diagnosis"]]
    spent = epsilon_of([Charge(release.noise_multiplier, 1.0, release.measurements)], DELTA)
    assert spent <= epsilon * (1 + 1e-6) and spent > 0.95 * epsilon


def test_at_a_large_epsilon_the_marginals_survive(domains) -> None:
    raw = people(2000, 5)
    rows, _ = synthesise(raw, domains, 20.0, DELTA, seed=2)
    real = raw["sex"].value_counts(normalize=True)
    fake = rows["sex"].value_counts(normalize=True)
    assert abs(real["F"] - fake["F"]) < 0.05 and abs(len(rows) - len(raw)) < 50


def test_a_domain_that_does_not_cover_the_table_is_refused(domains, tmp_path: Path) -> None:
    with pytest.raises(SynthesisError, match=r"missing \['name'\]"):
        synthesise(people().assign(name="x"), domains, 1.0, DELTA)
    with pytest.raises(SynthesisError, match=r"\['migraine'\].*diagnosis"):
        synthesise(people().assign(diagnosis="migraine"), domains, 1.0, DELTA)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"age": {"min": 5, "max": 1}}))
    with pytest.raises(SynthesisError, match="--domain"):
        load_domains(bad)
