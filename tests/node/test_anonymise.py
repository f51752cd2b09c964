"""The anonymisation gate on a table about people (names, ages, postcodes, sex, a diagnosis): after Mondrian
every equivalence class has at least k rows and l distinct diagnoses (re-measured here with a plain group-by),
the names are gone, the loss is reported; the gate refuses the raw table naming k, l and the columns. k, l
and t (Earth mover's distance) are re-measured by hand over the rows, on generated tables (hypothesis);
declared hierarchies generalise along their levels; the reference model reports accuracy before and after."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.node import hierarchies
from consortium.node.anonymise import AnonymityError, anonymise, measure, require
from consortium.node.info_loss import reference_accuracy

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


# --- independent re-measurement: plain Python over the rows, none of the gate's code ---------------------

def classes_of(frame: pd.DataFrame, quasi: list[str]) -> dict[tuple, list[int]]:
    found: dict[tuple, list[int]] = {}
    for i, row in enumerate(frame[quasi].astype(str).itertuples(index=False)):
        found.setdefault(tuple(row), []).append(i)
    return found


def emd_by_hand(part: list, whole: list, ordered: bool) -> float:
    domain = sorted(set(whole))
    p = [part.count(v) / len(part) for v in domain]
    q = [whole.count(v) / len(whole) for v in domain]
    if not ordered:
        return sum(abs(a - b) for a, b in zip(p, q, strict=True)) / 2
    running, total = 0.0, 0.0
    for a, b in zip(p[:-1], q[:-1], strict=True):
        running += a - b
        total += abs(running)
    return total / (len(domain) - 1) if len(domain) > 1 else 0.0


def remeasured(frame: pd.DataFrame, quasi: list[str], sensitive: str, ordered: bool) -> tuple[int, int, float]:
    whole = list(frame[sensitive])
    groups = classes_of(frame, quasi).values()
    k = min(len(rows) for rows in groups)
    l_found = min(len({whole[i] for i in rows}) for rows in groups)
    t = max(emd_by_hand([whole[i] for i in rows], whole, ordered) for rows in groups)
    return k, l_found, t


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(60, 240), k=st.integers(2, 8), l_required=st.integers(1, 3),
       t_allowed=st.sampled_from([None, 0.35, 0.5]))
def test_k_l_and_t_hold_when_remeasured_by_hand(seed: int, n: int, k: int, l_required: int,
                                                t_allowed: float | None) -> None:
    raw = people(n, seed)
    out, report = anonymise(raw, ["name"], QUASI, ["diagnosis"], k=k, l_required=l_required, t_allowed=t_allowed)
    assert "name" not in out.columns and not set(raw["name"]) & set(out.astype(str).to_numpy().ravel())
    if out.empty:
        assert report.suppressed_share == 1.0
        return
    found_k, found_l, found_t = remeasured(out, QUASI, "diagnosis", ordered=False)
    assert found_k >= k and found_l >= l_required
    assert t_allowed is None or found_t <= t_allowed + 1e-9
    assert (report.k, report.l_diversity) == (found_k, found_l)
    assert report.t_closeness == pytest.approx(found_t, abs=1e-6)


def test_t_closeness_of_a_numeric_sensitive_column_uses_the_ordered_distance() -> None:
    raw = people(300, 5).assign(weight=lambda f: np.where(f["age"] > 50, 90, 60) + f.index % 7)
    loose, _ = anonymise(raw, ["name"], QUASI, ["weight"], k=5)
    tight, report = anonymise(raw, ["name"], QUASI, ["weight"], k=5, t_allowed=0.15)
    assert remeasured(loose, QUASI, "weight", ordered=True)[2] > 0.15
    k, _, t = remeasured(tight, QUASI, "weight", ordered=True)
    assert k >= 5 and t <= 0.15 + 1e-9 and report.t_closeness == pytest.approx(t, abs=1e-6)
    with pytest.raises(AnonymityError, match=r"t = 0\.\d+.*t <= 0.05.*at fault: .*'weight'"):
        require(loose, QUASI, ["weight"], 5, 1, t_allowed=0.05)


def test_declared_hierarchies_generalise_along_their_levels() -> None:
    raw = people(400, 11).assign(postcode=lambda f: np.random.default_rng(2).choice(
        ["12345", "12346", "12377", "12411", "13502", "13509"], len(f)))
    levels = hierarchies.parse({
        "postcode": {"type": "mask", "levels": 5},
        "age": {"type": "intervals", "widths": [5, 10, 20]},
        "sex": {"type": "tree", "parents": {"F": ["person"], "M": ["person"]}}})
    out, report = anonymise(raw, ["name"], QUASI, ["diagnosis"], k=6, l_required=2, hierarchies=levels)
    allowed_postcodes = {levels["postcode"].at(p, i) for p in raw["postcode"] for i in range(6)}
    assert set(out["postcode"]) <= allowed_postcodes
    assert all(a == "*" or re.fullmatch(r"\d+-\d+", a) or a.isdigit() for a in out["age"])
    for a in out["age"]:
        if "-" in a:
            lo, hi = map(int, a.split("-"))
            assert hi - lo + 1 in (5, 10, 20) and lo % (hi - lo + 1) == 0  # an aligned interval of the hierarchy
    assert set(out["sex"]) <= {"F", "M", "person", "*"}
    assert remeasured(out, QUASI, "diagnosis", ordered=False)[0] >= 6
    assert set(report.hierarchies) == set(QUASI) and max(report.hierarchies.values()) >= 1
    with pytest.raises(AnonymityError, match="does not list"):
        anonymise(raw, ["name"], QUASI, ["diagnosis"], hierarchies=hierarchies.parse(
            {"sex": {"type": "tree", "parents": {"F": ["person"]}}}))
    with pytest.raises(AnonymityError, match="widths"):
        hierarchies.parse({"age": {"type": "intervals", "widths": [5, 7]}})


def test_the_loss_report_names_a_reference_models_accuracy_before_and_after() -> None:
    raw = people(300, 4)
    raw["diagnosis"] = np.where(raw["age"] > 55, "heart", raw["diagnosis"])
    out, report = anonymise(raw, ["name"], QUASI, ["diagnosis"], k=5)
    assert 0.0 <= report.suppressed_share <= 1.0 and set(report.ncp) == set(QUASI)
    reference = reference_accuracy(raw, out, "diagnosis", ["name"], seed=1)
    assert reference["accuracy_original"] is not None and reference["accuracy_anonymised"] is not None
    assert reference["accuracy_original"] > reference["majority_rate"]
    assert reference == reference_accuracy(raw, out, "diagnosis", ["name"], seed=1)  # seeded
