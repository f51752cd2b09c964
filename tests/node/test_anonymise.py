"""The anonymisation gate on a table about people (names, ages, postcodes, sex, a diagnosis): after Mondrian
every equivalence class has at least k rows and l distinct diagnoses (re-measured here with a plain group-by),
the names are gone, the loss is reported; the gate refuses the raw table naming k, l and the columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from consortium.node.anonymise import AnonymityError, anonymise, measure, require

QUASI = ["age", "postcode", "sex"]


def people(n: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "name": [f"person {i}" for i in range(n)],
        "age": rng.integers(18, 90, n),
        "postcode": rng.choice([f"AB{i}" for i in range(1, 13)], n),
        "sex": rng.choice(["F", "M"], n),
        "diagnosis": rng.choice(["flu", "asthma", "diabetes", "none", "migraine"], n),
    })


@pytest.mark.parametrize(("k", "l_required"), [(5, 2), (10, 3)])
def test_after_mondrian_every_class_has_k_rows_and_l_diagnoses(k: int, l_required: int) -> None:
    raw = people()
    out, report = anonymise(raw, ["name"], QUASI, ["diagnosis"], k=k, l_required=l_required)
    assert "name" not in out.columns and len(out) == len(raw)
    classes = out.groupby(QUASI)
    assert classes.size().min() >= k and classes["diagnosis"].nunique().min() >= l_required
    assert report.k >= k and report.l_diversity >= l_required and report.suppressed_share == 0.0
    assert set(report.ncp) == set(QUASI) and all(0.0 <= v <= 1.0 for v in report.ncp.values())
    assert sorted(out["diagnosis"]) == sorted(raw["diagnosis"])  # sensitive values kept, rows not dropped
    require(out, QUASI, ["diagnosis"], k, l_required, identifiers=["name"])


def test_the_gate_refuses_the_raw_table_with_k_l_and_the_columns_at_fault() -> None:
    raw = people()
    found = measure(raw.drop(columns=["name"]), QUASI, ["diagnosis"], 5)
    assert found.k == raw.groupby(QUASI).size().min() < 5
    with pytest.raises(AnonymityError, match="direct identifiers"):
        require(raw, QUASI, ["diagnosis"], 5, 2, identifiers=["name"])
    with pytest.raises(AnonymityError, match=r"is 1-anonymous .*k >= 5.*at fault: \['age'"):
        require(raw.drop(columns=["name"]), QUASI, ["diagnosis"], 5, 2)


def test_a_table_too_small_for_k_is_suppressed_whole() -> None:
    out, report = anonymise(people(4), ["name"], QUASI, ["diagnosis"], k=5)
    assert out.empty and report.suppressed_share == 1.0 and report.rows_out == 0


def test_undeclared_columns_are_named() -> None:
    with pytest.raises(AnonymityError, match="zipcode"):
        anonymise(people(), ["name"], ["zipcode"], ["diagnosis"])
