"""Credits: what an org earns by contributing and spends to take, under rules the consortium votes on.

An org's balance is never stored alone: it is the sum of its ``credits.earned`` and ``credits.spent`` ledger
entries (the hub keeps an index of them to answer quickly, and :func:`balance_of` is what both sum with). The
rules live in the consortium policy (:class:`CreditRules`, changed by a ``change_policy`` vote like every
rule), so what an org earned or paid can be recomputed from the ledger and the policy version in force.

Amounts are whole credits. A release's pool is split over the orgs with a positive measured contribution by
the largest-remainder method, so the awards sum to the pool exactly and an org's award never depends on the
order the contributions were listed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

MAX_CREDITS = 10**12
"""Bound of any one amount and of a rule's constants: far past any consortium's economy, inside BigInteger."""


class CreditReason(StrEnum):
    """Why credits moved: each earn and spend names one."""

    contribution = "contribution"
    """Measured contribution to a released model (its share of the release pool)."""
    compute = "compute"
    """Rounds trained for a completed run."""
    open_data = "open_data"
    """Another org downloaded the org's open dataset."""
    project = "project"
    """A project proposed beyond the free quota."""
    model_download = "model_download"
    """A released model downloaded by an org whose data did not train it."""
    prize_escrow = "prize_escrow"
    """A challenge's prize, held from its host when it opens."""
    prize = "prize"
    """A challenge prize won (the winner's team shares it)."""
    prize_refund = "prize_refund"
    """A challenge's held prize back to its host (nobody on the final board)."""


EARN_REASONS = frozenset({CreditReason.contribution, CreditReason.compute, CreditReason.open_data,
                          CreditReason.prize, CreditReason.prize_refund})
SPEND_REASONS = frozenset({CreditReason.project, CreditReason.model_download, CreditReason.prize_escrow})


class CreditRules(BaseModel):
    """What earns and what costs credits. A cost of 0 makes that action free."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    release_pool: int = Field(default=100, ge=0, le=MAX_CREDITS,
                              description="credits a released model shares among its contributors")
    per_round_trained: int = Field(default=1, ge=0, le=MAX_CREDITS,
                                   description="credits per round an org trained in a completed run")
    per_open_data_download: int = Field(default=5, ge=0, le=MAX_CREDITS,
                                        description="credits per download of an org's open dataset by another org")
    free_projects: int = Field(default=3, ge=0, le=2**31 - 1,
                               description="projects an org may propose before each costs project_cost")
    project_cost: int = Field(default=0, ge=0, le=MAX_CREDITS)
    model_download_cost: int = Field(default=0, ge=0, le=MAX_CREDITS,
                                     description="cost, once per model, of a model trained without your data")


class CreditError(ValueError):
    """A spend the balance does not cover, or an amount out of bounds."""


def check_amount(amount: int) -> int:
    """``amount`` if it is a whole number of credits in (0, MAX_CREDITS]."""
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_CREDITS:
        raise CreditError(f"a credit amount must be a whole number in 1..{MAX_CREDITS}, not {amount!r}")
    return amount


def balance_of(movements: Iterable[int]) -> int:
    """The balance: the sum of signed movements (earned positive, spent negative)."""
    return sum(movements)


def check_spend(balance: int, amount: int) -> None:
    """Refuse a spend the balance does not cover, with both numbers."""
    check_amount(amount)
    if amount > balance:
        raise CreditError(f"this costs {amount} credits and the balance is {balance}")


def release_awards(pool: int, contributions: Mapping[str, float]) -> dict[str, int]:
    """Split ``pool`` over the orgs with a positive, finite contribution, in proportion, summing to ``pool``
    (largest remainders, ties broken by org name). Nobody gets anything when nobody contributed positively."""
    positive = {org: value for org, value in contributions.items() if math.isfinite(value) and value > 0}
    total = sum(positive.values())
    if pool <= 0 or not positive or total <= 0:
        return {}
    exact = {org: pool * value / total for org, value in positive.items()}
    awards = {org: math.floor(share) for org, share in exact.items()}
    left = pool - sum(awards.values())
    for org in sorted(exact, key=lambda o: (-(exact[o] - awards[o]), o))[:left]:
        awards[org] += 1
    return {org: amount for org, amount in awards.items() if amount > 0}


def compute_awards(per_round: int, rounds_by_org: Mapping[str, int]) -> dict[str, int]:
    """Credits for rounds trained, per org that trained at least one."""
    return {org: per_round * rounds for org, rounds in rounds_by_org.items() if rounds > 0 and per_round > 0}


def project_cost(rules: CreditRules, proposed_before: int) -> int:
    """What the org's next project costs, having proposed ``proposed_before`` already."""
    return 0 if proposed_before < rules.free_projects else rules.project_cost
