"""Federated preprocessing: combining per-node statistics equals the statistics of all rows, the fitted
transform, and untrusted uploaded statistics refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.fl.categories import code_of
from consortium.fl.core import FLError
from consortium.fl.preprocessing import (
    ColumnStats, column_stats, combine, fit, from_tensors, layout, to_tensors, transform,
)
from consortium.preprocessing_wire import PreprocessingSpec

NAMES = ["a", "b", "colour"]


def _rows(draw_values: list[list[float]]) -> np.ndarray:
    return np.array(draw_values, dtype=np.float64).reshape(-1, 3)


value = st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.just(float("nan")))
row = st.tuples(value, value, st.sampled_from([0.0, 1.0, 2.0, float("nan")])).map(list)


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(row, min_size=1, max_size=40), cuts=st.lists(st.integers(0, 40), max_size=5),
       impute=st.sampled_from([None, "mean", "most_frequent"]))
def test_combined_stats_equal_the_stats_of_all_rows_for_any_split(rows, cuts, impute):
    spec = PreprocessingSpec(scale="standardise", categorical=["colour"], impute=impute)
    plan = layout(spec, NAMES)
    data = _rows(rows)
    bounds = sorted({0, len(data), *(min(c, len(data)) for c in cuts)})
    parts = [column_stats(data[lo:hi], plan, 64) for lo, hi in zip(bounds, bounds[1:]) if hi > lo]
    combined, whole = combine(parts), column_stats(data, plan, 64)
    assert combined.rows == whole.rows
    assert np.array_equal(combined.count, whole.count)
    assert np.array_equal(combined.low, whole.low) and np.array_equal(combined.high, whole.high)
    assert np.allclose(combined.total, whole.total, rtol=1e-9, atol=1e-6)
    assert np.allclose(combined.squares, whole.squares, rtol=1e-9, atol=1e-3)
    assert combined.values == whole.values


def test_standardised_features_have_mean_zero_and_unit_variance_and_categories_are_one_hot():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(50, 10, 300), rng.uniform(-3, 9, 300), rng.integers(0, 3, 300)])
    spec = PreprocessingSpec(scale="standardise", categorical=["colour"])
    plan = layout(spec, NAMES)
    fitted = fit(spec, plan, combine([column_stats(x[:70], plan, 64), column_stats(x[70:], plan, 64)]))
    out = transform(fitted, torch.from_numpy(x).float()).double().numpy()
    assert fitted.output_features == 5 and out.shape == (300, 5)
    assert np.allclose(out[:, :2].mean(axis=0), 0, atol=1e-5)
    assert np.allclose(out[:, :2].std(axis=0), 1, atol=1e-4)
    assert np.array_equal(out[:, 2:].argmax(axis=1), x[:, 2].astype(int))
    assert np.array_equal(out[:, 2:].sum(axis=1), np.ones(300))
    unseen = transform(fitted, torch.tensor([[1.0, 2.0, 7.0]]))
    assert unseen[0, 2:].tolist() == [0.0, 0.0, 0.0]


def test_min_max_scales_to_the_unit_interval_and_a_constant_feature_is_left_unscaled():
    x = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 1.0], [2.0, 5.0, 0.0]])
    spec = PreprocessingSpec(scale="min-max", columns=["a", "b"])
    plan = layout(spec, NAMES)
    fitted = fit(spec, plan, column_stats(x, plan, 64))
    out = transform(fitted, torch.from_numpy(x).float())
    assert out[:, 0].tolist() == [0.0, 1.0, 0.5]
    assert out[:, 1].tolist() == [0.0, 0.0, 0.0]
    assert out[:, 2].tolist() == [0.0, 1.0, 0.0]


def test_missing_values_are_imputed_by_mean_or_most_frequent_and_refused_without_impute():
    x = np.array([[1.0, 2.0, 1.0], [np.nan, 2.0, 1.0], [3.0, 4.0, np.nan], [3.0, np.nan, 0.0]])
    for impute, fill_a in (("mean", 7 / 3), ("most_frequent", 3.0)):
        spec = PreprocessingSpec(categorical=["colour"], impute=impute)
        plan = layout(spec, NAMES)
        fitted = fit(spec, plan, column_stats(x, plan, 64))
        assert fitted.fill[0] == pytest.approx(fill_a) and fitted.fill[2] == 1.0
        out = transform(fitted, torch.from_numpy(x).float())
        assert not torch.isnan(out).any()
        assert out[2, 2:].tolist() == [0.0, 1.0]
    spec = PreprocessingSpec(scale="standardise")
    plan = layout(spec, NAMES)
    with pytest.raises(FLError, match="set preprocessing.impute"):
        fit(spec, plan, column_stats(x, plan, 64))


def test_unknown_columns_and_too_many_categories_are_refused_by_name():
    with pytest.raises(FLError, match="unknown feature column"):
        layout(PreprocessingSpec(categorical=["shape"]), NAMES)
    spec = PreprocessingSpec(categorical=["a"], max_categories=2)
    with pytest.raises(FLError, match="'a' has 3 distinct values"):
        column_stats(np.array([[1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0]]), layout(spec, NAMES), 2)


def test_uploaded_stats_round_trip_and_lies_are_refused():
    spec = PreprocessingSpec(scale="standardise", categorical=["colour"])
    plan = layout(spec, NAMES)
    stats = column_stats(np.array([[1.0, 2.0, 0.0], [3.0, 4.0, 1.0]]), plan, 64)
    back = from_tensors(to_tensors(stats), plan, 2, 64)
    assert back.values == stats.values and np.array_equal(back.total, stats.total)
    with pytest.raises(FLError, match=r"rows must be a whole number in \[1, 1\]"):
        from_tensors(to_tensors(stats), plan, 1, 64)
    bad = to_tensors(stats)
    bad["count"] = torch.tensor([2.0, 2.0, 5.0], dtype=torch.float64)
    with pytest.raises(FLError, match="counts must be whole numbers"):
        from_tensors(bad, plan, 2, 64)
    bad = to_tensors(stats)
    bad["values.2"] = torch.tensor([[0.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    with pytest.raises(FLError, match="summing to count"):
        from_tensors(bad, plan, 2, 64)
    bad = to_tensors(stats)
    del bad["high"]
    with pytest.raises(FLError, match="do not match the project's columns: missing high"):
        from_tensors(bad, plan, 2, 64)
    bad = to_tensors(stats)
    del bad["values.2"]
    with pytest.raises(FLError, match=r"missing values.2 \(feature 'colour'\)"):
        from_tensors(bad, plan, 2, 64)


def test_string_categories_travel_with_their_texts_and_the_fit_keeps_them():
    spec = PreprocessingSpec(scale="standardise", categorical=["colour"])
    plan = layout(spec, NAMES)
    red, blue, green = (code_of(t) for t in ("red", "blue", "green"))
    one = column_stats(np.array([[1.0, 2.0, red], [3.0, 4.0, blue]]), plan, 64, {2: {red: "red", blue: "blue"}})
    two = column_stats(np.array([[5.0, 6.0, green]]), plan, 64, {2: {green: "green"}})
    parts = [from_tensors(to_tensors(s), plan, 2, 64) for s in (one, two)]
    assert parts[0].labels == {2: {red: "red", blue: "blue"}}
    fitted = fit(spec, plan, combine(parts))
    (column,) = fitted.one_hot
    assert column.name == "colour" and column.categories == sorted([red, blue, green])
    assert dict(zip(column.categories, column.labels)) == {red: "red", blue: "blue", green: "green"}
    out = transform(fitted, torch.tensor([[1.0, 2.0, green]], dtype=torch.float64))
    assert out[0, 2 + column.categories.index(green)] == 1.0 and float(out[0, 2:].sum()) == 1.0


def test_lying_or_conflicting_category_texts_are_refused():
    spec = PreprocessingSpec(categorical=["colour"])
    plan = layout(spec, NAMES)
    red = code_of("red")
    stats = column_stats(np.array([[1.0, 2.0, red]]), plan, 64, {2: {red: "red"}})
    bad = to_tensors(stats)
    bad["labels.2"] = torch.tensor(list(b'["blue"]'), dtype=torch.uint8)
    with pytest.raises(FLError, match=r"labels.2 \(feature 'colour'\) must name each counted value"):
        from_tensors(bad, plan, 1, 64)
    bad["labels.2"] = torch.tensor(list(b"not json"), dtype=torch.uint8)
    with pytest.raises(FLError, match="not a JSON list"):
        from_tensors(bad, plan, 1, 64)
    other = ColumnStats(1, stats.count, stats.total, stats.squares, stats.low, stats.high, stats.values,
                        {2: {red: "crimson"}})
    with pytest.raises(FLError, match="'red' and 'crimson' have the same code"):
        combine([stats, other])
