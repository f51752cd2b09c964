"""The one-run audit's bound (Steinke, Nasr and Jagielski 2023, Theorem 5.2), guesses and canaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.fl.privacy.audit import (
    canary_directions,
    draw_membership,
    epsilon_lower_bound,
    guesses,
    judge,
    p_value,
)


def test_p_value_without_delta_is_the_binomial_tail_of_randomised_response() -> None:
    q = math.exp(1.0) / (1 + math.exp(1.0))
    assert p_value(100, 40, 30, 1.0, 0.0) == pytest.approx(scipy.stats.binom.sf(29, 40, q))


def test_delta_only_raises_the_p_value() -> None:
    assert p_value(1000, 100, 80, 1.0, 1e-3) > p_value(1000, 100, 80, 1.0, 0.0)


@settings(max_examples=200, deadline=None)
@given(r=st.integers(1, 200), data=st.data(), delta=st.sampled_from([0.0, 1e-6, 1e-5]))
def test_bound_is_monotone_in_correct_guesses(r: int, data: st.DataObject, delta: float) -> None:
    v = data.draw(st.integers(0, r - 1))
    m = data.draw(st.integers(r, 2 * r + 10))
    assert epsilon_lower_bound(m, r, v, delta) <= epsilon_lower_bound(m, r, v + 1, delta)


@pytest.mark.parametrize("r", [10, 100, 1000])
def test_bound_is_zero_at_chance(r: int) -> None:
    assert epsilon_lower_bound(r, r, r // 2, 1e-5) == 0.0


def test_bound_refutes_what_it_reports_and_not_much_more() -> None:
    bound = epsilon_lower_bound(1000, 100, 100, 1e-5)
    assert p_value(1000, 100, 100, bound, 1e-5) < 0.05 <= p_value(1000, 100, 100, bound + 1e-3, 1e-5)
    # delta = 0, all 100 guesses right: (e^eps / (1 + e^eps))^100 >= 0.05 only above eps = 3.49
    pure = epsilon_lower_bound(1000, 100, 100, 0.0)
    assert pure == pytest.approx(math.log(0.05 ** 0.01 / (1 - 0.05 ** 0.01)), abs=1e-3)
    assert bound < pure


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="correct"):
        epsilon_lower_bound(10, 5, 6, 0.0)
    with pytest.raises(ValueError, match="k_in"):
        guesses(np.zeros(4), 3, 2)


def test_guesses_take_the_top_and_bottom_scores() -> None:
    assert guesses(np.array([0.3, -2.0, 5.0, 0.1, -0.5]), 2, 1).tolist() == [1, -1, 1, 0, 0]


def test_judge_counts_correct_guesses() -> None:
    membership = np.array([True, False, True, False, True, False])
    outcome = judge(membership, np.array([3.0, -3.0, 2.0, 1.0, -1.0, -2.0]), 2, 2, 0.0)
    # IN guesses: canaries 0 and 2 (both IN); OUT guesses: 1 and 5 (both OUT)
    assert (outcome.guesses, outcome.correct) == (4, 4)


def test_canaries_are_unit_seeded_and_about_half_in() -> None:
    directions = canary_directions(50, 300, 7)
    assert torch.allclose(directions.norm(dim=1), torch.ones(50, dtype=torch.float64))
    assert torch.equal(directions, canary_directions(50, 300, 7))
    assert 400 < draw_membership(1000, 3).sum() < 600
