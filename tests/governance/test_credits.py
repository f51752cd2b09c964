"""Credit rules: release pools split exactly, spends checked against the balance, amounts bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from consortium.governance.credits import (
    MAX_CREDITS,
    CreditError,
    CreditRules,
    balance_of,
    check_amount,
    check_spend,
    compute_awards,
    project_cost,
    release_awards,
)

contributions = st.dictionaries(st.sampled_from("abcdefgh"),
                                st.floats(min_value=-1.0, max_value=1.0, allow_nan=False), max_size=8)


@given(st.integers(0, 10**6), contributions)
def test_a_release_pool_is_split_exactly_among_positive_contributors(pool, values):
    awards = release_awards(pool, values)
    positive = {org for org, value in values.items() if value > 0}
    assert set(awards) <= positive
    assert sum(awards.values()) == (pool if positive else 0)
    assert all(amount > 0 for amount in awards.values())


@given(st.integers(1, 10**6), contributions)
def test_the_split_does_not_depend_on_the_order_contributions_are_listed(pool, values):
    assert release_awards(pool, values) == release_awards(pool, dict(reversed(list(values.items()))))


def test_a_larger_contribution_never_gets_less():
    awards = release_awards(100, {"a": 0.3, "b": 0.1, "c": 0.1, "d": -0.2})
    assert awards == {"a": 60, "b": 20, "c": 20}
    assert release_awards(10, {"x": 1.0, "y": 1.0, "z": 1.0}) == {"x": 4, "y": 3, "z": 3}
    assert release_awards(100, {"a": float("inf"), "b": 1.0}) == {"b": 100}
    assert release_awards(100, {"a": -1.0}) == {}


def test_compute_awards_pay_per_round_trained():
    assert compute_awards(2, {"a": 3, "b": 0}) == {"a": 6}
    assert compute_awards(0, {"a": 3}) == {}


@given(st.lists(st.integers(-1000, 1000)))
def test_the_balance_is_the_sum_of_movements(movements):
    assert balance_of(movements) == sum(movements)


def test_a_spend_past_the_balance_is_refused_with_both_numbers():
    check_spend(10, 10)
    with pytest.raises(CreditError, match="costs 11 credits and the balance is 10"):
        check_spend(10, 11)


@pytest.mark.parametrize("amount", [0, -1, MAX_CREDITS + 1, 1.5, True, "3"])
def test_amounts_are_whole_and_bounded(amount):
    with pytest.raises(CreditError, match="whole number"):
        check_amount(amount)


def test_projects_cost_only_past_the_free_quota():
    rules = CreditRules(free_projects=2, project_cost=7)
    assert [project_cost(rules, n) for n in range(4)] == [0, 0, 7, 7]


def test_rules_refuse_negative_or_unknown_settings():
    with pytest.raises(ValidationError):
        CreditRules(project_cost=-1)
    with pytest.raises(ValidationError):
        CreditRules(bonus=5)
