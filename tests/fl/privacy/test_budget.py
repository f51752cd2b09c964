"""A dataset's privacy budget composed by dp-accounting: equal to the library's own composition, monotone in the
charges, consistent with the run accountant, and refused exactly past the budget."""

from __future__ import annotations

import dp_accounting
import pytest
from dp_accounting.pld import PLDAccountant
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.fl.privacy import accountant, card
from consortium.fl.privacy import spec as privacy_spec
from consortium.fl.privacy.budget import (
    Budget,
    Charge,
    epsilon_of,
    no_dp_refusal,
    plan_refusal,
    round_refusal,
    verdict,
)
from consortium.privacy_wire import PrivacySpec

DELTA = 1e-5
noises = st.sampled_from([0.8, 1.5, 3.0, 5.0])
rates = st.sampled_from([0.25, 1.0])
charges = st.lists(st.builds(Charge, noises, rates), min_size=1, max_size=6)


def test_no_charge_spends_nothing() -> None:
    assert epsilon_of([], DELTA) == 0.0


def test_equals_dp_accountings_composition_of_the_same_events_in_order() -> None:
    spent = [Charge(3.0), Charge(5.0, 0.5), Charge(3.0), Charge(1.5)]
    events = [dp_accounting.PoissonSampledDpEvent(c.sampling_rate, dp_accounting.GaussianDpEvent(c.noise_multiplier))
              for c in spent]
    expected = PLDAccountant(value_discretization_interval=accountant.PLD_DISCRETISATION).compose(
        dp_accounting.ComposedDpEvent(events)).get_epsilon(DELTA)
    assert epsilon_of(spent, DELTA) == pytest.approx(expected, rel=1e-6)


def test_one_project_charged_round_by_round_spends_what_the_run_accountant_says() -> None:
    assert epsilon_of([Charge(3.0)] * 5, DELTA) == pytest.approx(
        accountant.epsilon_spent(3.0, 1.0, 5, DELTA), rel=1e-6)


def test_composition_is_tighter_than_adding_epsilons() -> None:
    one = epsilon_of([Charge(3.0)], DELTA)
    assert epsilon_of([Charge(3.0)] * 4, DELTA) < 4 * one


@settings(max_examples=40, deadline=None)
@given(spent=charges, more=charges)
def test_more_charges_never_spend_less(spent: list[Charge], more: list[Charge]) -> None:
    assert epsilon_of(spent + more, DELTA) >= epsilon_of(spent, DELTA) - 1e-9


@settings(max_examples=20, deadline=None)
@given(spent=charges)
def test_the_order_of_charges_does_not_matter(spent: list[Charge]) -> None:
    assert epsilon_of(spent, DELTA) == pytest.approx(epsilon_of(list(reversed(spent)), DELTA), rel=1e-9)


def test_refusal_boundary_is_the_budget_itself() -> None:
    spent = [Charge(3.5)] * 3
    total = epsilon_of(spent + [Charge(3.5)], DELTA)
    assert verdict(Budget(total, DELTA), spent, [Charge(3.5)]).fits
    assert round_refusal("north/digits", verdict(Budget(total, DELTA), spent, [Charge(3.5)])) is None
    tight = verdict(Budget(total * 0.999, DELTA), spent, [Charge(3.5)])
    assert not tight.fits
    reason = round_refusal("north/digits", tight)
    assert reason is not None and reason.startswith("privacy budget of north/digits would pass ε = ")
    assert f"spent {tight.spent:.2f}" in reason and f"this round {tight.added:.2f}" in reason


def test_verdict_numbers_and_left() -> None:
    check = verdict(Budget(2.0, DELTA), [Charge(3.5)] * 2, [Charge(3.5)] * 3)
    assert check.spent == pytest.approx(epsilon_of([Charge(3.5)] * 2, DELTA))
    assert check.added == pytest.approx(epsilon_of([Charge(3.5)] * 3, DELTA))
    assert check.total == pytest.approx(epsilon_of([Charge(3.5)] * 5, DELTA))
    assert check.added_rounds == 3 and check.left == pytest.approx(2.0 - check.spent)
    assert not check.fits
    reason = plan_refusal("north/digits", check)
    assert reason == (f"north/digits: privacy budget ε = 2 at δ = 1e-05, spent {check.spent:.2f}, reserved 0.00; "
                      f"this project's 3 rounds need {check.added:.2f}, together {check.total:.2f}")
    assert "without differential privacy" in no_dp_refusal("north/digits")


def test_reserved_rounds_compose_with_the_spent_and_the_planned_ones() -> None:
    alone = verdict(Budget(2.0, DELTA), [Charge(3.5)], [Charge(3.5)])
    assert alone.fits and alone.reserved == 0.0
    check = verdict(Budget(2.0, DELTA), [Charge(3.5)], [Charge(3.5)], reserved=[Charge(3.5)] * 2)
    assert check.reserved == pytest.approx(epsilon_of([Charge(3.5)] * 2, DELTA))
    assert check.total == pytest.approx(epsilon_of([Charge(3.5)] * 4, DELTA)) and not check.fits
    assert check.left == pytest.approx(2.0 - check.spent)
    reason = plan_refusal("north/digits", check, ["first (2 rounds)"])
    assert reason == (f"north/digits: privacy budget ε = 2 at δ = 1e-05, spent {check.spent:.2f}, reserved "
                      f"{check.reserved:.2f} by first (2 rounds); this project's 1 rounds need {check.added:.2f}, "
                      f"together {check.total:.2f}")


@pytest.mark.parametrize("bad", [dict(epsilon=0.0, delta=DELTA), dict(epsilon=2.0, delta=1.0),
                                 dict(epsilon=float("inf"), delta=DELTA), dict(epsilon=2.0, delta=0.0)])
def test_bad_budgets_are_refused_naming_the_field(bad: dict) -> None:
    with pytest.raises(ValueError, match="privacy_budget"):
        Budget(**bad)


@pytest.mark.parametrize("bad", [dict(noise_multiplier=0.0), dict(noise_multiplier=1.0, sampling_rate=0.0),
                                 dict(noise_multiplier=1.0, sampling_rate=1.5)])
def test_bad_charges_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        Charge(**bad)


def test_the_model_card_states_each_budget_after_the_run() -> None:
    plan = privacy_spec.every_round(PrivacySpec(noise="local", clip=1.0, epsilon=2.0, delta=DELTA,
                                                noise_multiplier=3.5), 2, 2)
    budget = {"epsilon": 2.0, "delta": DELTA, "spent": 1.57, "left": 0.43}
    section = card.card_section(plan, ["north/a", "south/b"], {"north/a": budget})
    assert section["privacy"]["per_dataset"]["north/a"]["budget"] == budget
    assert "budget" not in section["privacy"]["per_dataset"]["south/b"]
    lines = card.markdown_lines(section)
    assert "| north/a | 2 | 1e-05 | 1.57 | 0.43 |" in lines
    assert not any("budget" in line for line in card.markdown_lines(card.card_section(plan, ["south/b"])))
