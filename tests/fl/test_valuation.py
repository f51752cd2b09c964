"""Contribution valuation: exact Shapley, GTG-Shapley and leave-one-out on games with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.fl.core import FLError
from consortium.fl.valuation import (
    CachedGame,
    GtgOptions,
    accumulate,
    exact_shapley,
    gtg_shapley,
    leave_one_out,
)

weights_lists = st.lists(st.floats(min_value=-1.0, max_value=1.0, allow_nan=False), min_size=1, max_size=7)


def additive(weights):
    return lambda coalition: sum(weights[i] for i in coalition)


def concave(weights):
    """Diminishing returns: the value of a coalition is the square root of its members' total data."""
    return lambda coalition: math.sqrt(sum(weights[i] for i in coalition))


@given(weights_lists)
def test_exact_shapley_of_an_additive_game_is_each_weight(weights):
    assert np.allclose(exact_shapley(len(weights), additive(weights)).values, weights)


@given(st.lists(st.floats(min_value=0.0, max_value=10.0, allow_nan=False), min_size=1, max_size=7))
def test_exact_shapley_is_efficient(weights):
    game = concave(weights)
    everyone = frozenset(range(len(weights)))
    assert math.isclose(exact_shapley(len(weights), game).values.sum(), game(everyone) - game(frozenset()),
                        abs_tol=1e-9)


def test_exact_shapley_gives_symmetric_players_equal_values_and_a_null_player_zero():
    values = exact_shapley(4, concave([2.0, 2.0, 5.0, 0.0])).values
    assert math.isclose(values[0], values[1], abs_tol=1e-12)
    assert values[3] == 0.0
    assert values[2] > values[0]


def test_exact_shapley_evaluates_every_coalition_once():
    calls = []
    result = exact_shapley(5, lambda c: calls.append(c) or len(c))
    assert result.evaluations == 32 == len(calls) == len(set(calls))


def test_exact_shapley_refuses_too_many_players():
    with pytest.raises(FLError, match="over 16"):
        exact_shapley(17, len)


@settings(max_examples=30)
@given(weights_lists, st.integers(0, 2**32 - 1))
def test_gtg_shapley_is_exact_on_an_additive_game(weights, seed):
    options = GtgOptions(eps_between=0.0, eps_within=0.0, max_permutations=20)
    result = gtg_shapley(len(weights), additive(weights), np.random.default_rng(seed), options)
    if result.skipped:
        assert math.isclose(sum(weights), 0.0, abs_tol=1e-12)
    else:
        assert np.allclose(result.values, weights)


def test_gtg_shapley_approaches_exact_on_a_concave_game():
    weights = [1.0, 2.0, 3.0, 5.0, 8.0, 0.5, 0.0, 4.0]
    exact = exact_shapley(len(weights), concave(weights)).values
    estimate = gtg_shapley(len(weights), concave(weights), np.random.default_rng(0),
                           GtgOptions(eps_within=0.0, tolerance=0.005, max_permutations=2000))
    assert np.abs(estimate.values - exact).mean() <= 0.05 * exact.sum()
    assert list(np.argsort(estimate.values)) == list(np.argsort(exact))
    assert estimate.evaluations < 2 ** len(weights)


def test_gtg_shapley_skips_a_round_that_gains_nothing():
    result = gtg_shapley(5, lambda coalition: 0.5 + 1e-6 * len(coalition), np.random.default_rng(1))
    assert result.skipped and result.evaluations == 2
    assert not result.values.any()


def test_within_round_truncation_spares_evaluations_and_keeps_the_total():
    weights = [0.6, 0.2, 0.1, 1e-5, 1e-5, 1e-5]
    game = concave(weights)
    rng = np.random.default_rng(3)
    truncated = gtg_shapley(len(weights), game, rng, GtgOptions(eps_within=0.01, max_permutations=60))
    full = gtg_shapley(len(weights), game, np.random.default_rng(3), GtgOptions(eps_within=0.0, max_permutations=60))
    assert truncated.evaluations < full.evaluations
    total = game(frozenset(range(len(weights)))) - game(frozenset())
    assert abs(truncated.values.sum() - total) <= 0.01


def test_gtg_shapley_is_reproducible_for_a_seed():
    game = concave([1.0, 4.0, 2.0, 3.0])
    first = gtg_shapley(4, game, np.random.default_rng(7)).values
    assert np.array_equal(first, gtg_shapley(4, game, np.random.default_rng(7)).values)


def test_each_player_leads_before_convergence_is_checked():
    result = gtg_shapley(6, concave([1.0] * 6), np.random.default_rng(0),
                         GtgOptions(window=1, tolerance=0.5, eps_within=0.0))
    assert result.permutations >= 6


def test_leave_one_out_is_the_loss_without_each_player():
    weights = [1.0, 4.0, 0.0]
    result = leave_one_out(3, concave(weights))
    assert np.allclose(result.values, [math.sqrt(5) - 2, math.sqrt(5) - 1, 0.0])
    assert result.evaluations == 4


def test_a_game_that_scores_nan_is_refused_naming_the_coalition():
    with pytest.raises(FLError, match=r"\[0, 1\]"):
        CachedGame(lambda c: float("nan") if len(c) == 2 else 1.0)(frozenset({0, 1}))


@given(st.lists(st.tuples(st.sampled_from("abcde"), st.floats(-1, 1, allow_nan=False)), max_size=20))
def test_accumulated_totals_equal_the_sum_of_each_orgs_rounds(entries):
    totals: dict[str, float] = {}
    for name, value in entries:
        totals = accumulate(totals, [name], np.array([value]))
    for name in {n for n, _ in entries}:
        assert math.isclose(totals[name], sum(v for n, v in entries if n == name), abs_tol=1e-9)


def test_accumulate_refuses_mismatched_or_repeated_names():
    with pytest.raises(FLError, match="2 values for 1"):
        accumulate({}, ["a"], np.array([1.0, 2.0]))
    with pytest.raises(FLError, match="distinct"):
        accumulate({}, ["a", "a"], np.array([1.0, 2.0]))
