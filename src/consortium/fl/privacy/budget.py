"""A dataset owner's privacy budget: every round a dataset took part in, composed into one (epsilon, delta).

Each round a DP project trains on a dataset is one sampled Gaussian mechanism (a :class:`Charge`: its noise
multiplier and sampling rate). What a dataset has spent is the composition of ALL its charges, across rounds and
across runs and projects, as one ``dp_accounting`` event sequence (a ``ComposedDpEvent`` of Poisson-sampled
Gaussian events, identical charges grouped as ``SelfComposedDpEvent``) given to the PLD accountant, asked for
epsilon at the budget's delta. Epsilons are never added by hand (their sum is only a loose upper bound).

Hub runs hand every data source every round (sampling rate 1), where Poisson and fixed-size sampling coincide
with the plain Gaussian mechanism; charges therefore always compose under the add-or-remove-one relation.
Pure: no I/O, no clock. The node (:mod:`consortium.node.budget`) and the hub use it alike.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import dp_accounting
from dp_accounting.pld import PLDAccountant

from consortium.fl.privacy.accountant import PLD_DISCRETISATION, check_delta, check_epsilon

BOUNDARY_SLACK = 1e-9
"""Relative slack on the budget: a total equal to the budget (up to float rounding) still fits."""


@dataclass(frozen=True)
class Budget:
    """The owner's total (epsilon, delta) for one dataset, over every run that will ever use it."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon, "privacy_budget.epsilon")
        check_delta(self.delta, "privacy_budget.delta")


@dataclass(frozen=True)
class Charge:
    """One round's privacy cost on one dataset: ``steps`` Gaussian mechanisms of ``noise_multiplier``, each on
    a sample drawn at ``sampling_rate`` (DP-FedAvg: one step on clients; DP-SGD: its local steps on rows)."""

    noise_multiplier: float
    sampling_rate: float = 1.0
    steps: int = 1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ValueError(f"noise_multiplier must be a finite number > 0, got {self.noise_multiplier}")
        if not (math.isfinite(self.sampling_rate) and 0 < self.sampling_rate <= 1):
            raise ValueError(f"sampling_rate must lie in (0, 1], got {self.sampling_rate}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")

    def event(self) -> dp_accounting.DpEvent:
        """This round as a ``dp_accounting`` event."""
        step = dp_accounting.PoissonSampledDpEvent(self.sampling_rate,
                                                   dp_accounting.GaussianDpEvent(self.noise_multiplier))
        return step if self.steps == 1 else dp_accounting.SelfComposedDpEvent(step, self.steps)


def composed_event(charges: Iterable[Charge]) -> dp_accounting.DpEvent:
    """Every charge as one composed event (equal charges grouped, which changes nothing in the composition)."""
    counts = Counter(charges)
    ordered = sorted(counts.items(), key=lambda item: (item[0].noise_multiplier, item[0].sampling_rate,
                                                       item[0].steps))
    return dp_accounting.ComposedDpEvent(
        [dp_accounting.SelfComposedDpEvent(charge.event(), count) for charge, count in ordered])


def epsilon_of(charges: Iterable[Charge], delta: float) -> float:
    """Epsilon at ``delta`` of all ``charges`` composed (0 for none), by the PLD accountant."""
    check_delta(delta)
    charges = list(charges)
    if not charges:
        return 0.0
    accountant = PLDAccountant(value_discretization_interval=PLD_DISCRETISATION)
    return float(accountant.compose(composed_event(charges)).get_epsilon(delta))


@dataclass(frozen=True)
class Verdict:
    """Whether ``more`` charges fit a budget after ``spent`` (and the ``reserved`` charges of approved runs
    still to come): the epsilons of the spent charges, of the reserved ones alone, of the new ones alone and
    of all of them together, at the budget's delta."""

    budget: Budget
    spent: float
    added: float
    total: float
    added_rounds: int
    reserved: float = 0.0

    @property
    def fits(self) -> bool:
        """True when the total stays within the budget's epsilon."""
        return self.total <= self.budget.epsilon * (1 + BOUNDARY_SLACK)

    @property
    def left(self) -> float:
        """Epsilon left after the spent charges (never below 0)."""
        return max(0.0, self.budget.epsilon - self.spent)


def verdict(budget: Budget, spent: Iterable[Charge], more: Iterable[Charge],
            reserved: Iterable[Charge] = ()) -> Verdict:
    """The :class:`Verdict` of adding ``more`` charges to ``spent`` and ``reserved`` under ``budget``."""
    spent, more, reserved = list(spent), list(more), list(reserved)
    return Verdict(budget, epsilon_of(spent, budget.delta), epsilon_of(more, budget.delta),
                   epsilon_of(spent + reserved + more, budget.delta), len(more), epsilon_of(reserved, budget.delta))


def round_refusal(ref: str, check: Verdict) -> str | None:
    """Why a node refuses a round on dataset ``ref`` (None when it fits), with the numbers."""
    if check.fits:
        return None
    return (f"privacy budget of {ref} would pass ε = {check.budget.epsilon:.2f} at δ = {check.budget.delta:.3g} "
            f"(spent {check.spent:.2f}, this round {check.added:.2f}, together {check.total:.2f})")


def plan_refusal(ref: str, check: Verdict, reserved_by: Iterable[str] = ()) -> str | None:
    """Why a proposal is refused on dataset ``ref`` (None when its planned rounds fit), with the numbers;
    ``reserved_by`` names the approved projects whose rounds to come are reserved."""
    if check.fits:
        return None
    holders = ", ".join(reserved_by)
    return (f"{ref}: privacy budget ε = {check.budget.epsilon:g} at δ = {check.budget.delta:.3g}, spent "
            f"{check.spent:.2f}, reserved {check.reserved:.2f}" + (f" by {holders}" if holders else "")
            + f"; this project's {check.added_rounds} rounds need {check.added:.2f}, together {check.total:.2f}")


def no_dp_refusal(ref: str) -> str:
    """Why a dataset with a budget is not trained on (or evaluated) by a project without DP."""
    return (f"{ref} has a privacy budget, and a project without differential privacy (no 'privacy' in its "
            "spec) would spend it without bound")
