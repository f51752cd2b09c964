"""The hub's side of the anonymisation gate: a publish is checked against the consortium policy's open data
rules (the node's anonymisation report: k, l, t over the declared columns), and DP synthetic data is charged
to its dataset's privacy budget (refused when it would overspend).

The hub never re-reads the rows to measure them: it checks what the owner's node measured and declared, and
keeps the report in the ``dataset.published`` ledger entry, so the declaration is on record.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from consortium.fl.privacy import budget as privacy_budget
from consortium.fl.privacy.budget import Charge
from consortium.governance.open_data_rules import OpenDataRules
from consortium.hub.db.models import Dataset
from consortium.hub.services import policy as policies
from consortium.hub.services.errors import BadRequest
from consortium.hub.services.privacy_budgets import budget_of, charges, reserved
from consortium.open_data_wire import AnonymityReport, OpenVersionIn, SyntheticRelease

EPSILON_SLACK = 1e-6
"""Relative slack between the epsilon a release declares and the one the hub's accountant finds."""


def rules(session: Session) -> OpenDataRules:
    """The open data rules of the policy in force (the defaults before any policy exists)."""
    policy = policies.in_force(session)
    return OpenDataRules() if policy is None else policy.open_data_rules()


def anonymity_refusal(report: AnonymityReport | None, need: OpenDataRules) -> str | None:
    """Why a publish of real rows falls short of the rules (None when it meets them), naming the measured
    k, l and t and the columns at fault."""
    if report is None:
        return ("anonymity: the publish carries no anonymisation report; the node makes one for every publish "
                "(`consortium dataset publish`, with --quasi for a table about people or --not-about-people), "
                "and the hub publishes real rows only with it")
    if not report.quasi:
        if report.about_people and need.people_need_quasi:
            return ("anonymity: the table is about people and declares no quasi-identifiers; the policy needs "
                    "them (or DP synthetic data)")
        return None
    k, l_found, t = report.k or 0, report.l_diversity or 0, report.t_closeness
    k_fault, l_fault = k < need.min_k, l_found < need.min_l
    t_fault = need.max_t is not None and (t is None or t > need.max_t)
    faults = ([f"k = {k} < {need.min_k}"] if k_fault else []) + ([f"l = {l_found} < {need.min_l}"] if l_fault else [])
    if t_fault:
        faults.append(f"t = {'unmeasured' if t is None else f'{t:.3f}'} > {need.max_t:g}")
    if not faults:
        return None
    at_fault = report.at_fault or [*(report.quasi if k_fault else []),
                                   *(report.sensitive if l_fault or t_fault else [])]
    return (f"anonymity: the table is {k}-anonymous and {l_found}-diverse"
            + (f", t = {t:.3f}" if t is not None else "")
            + f" over {report.quasi}; the consortium policy needs k >= {need.min_k}, l >= {need.min_l}"
            + (f", t <= {need.max_t:g}" if need.max_t is not None else "")
            + f" ({'; '.join(faults)}); columns at fault: {at_fault}")


def synthetic_charge(release: SyntheticRelease) -> Charge:
    """The release as the accountant composes it: its Gaussian measurements, each of sensitivity 1."""
    return Charge(release.noise_multiplier, 1.0, release.measurements)


def check_synthetic(session: Session, dataset: Dataset, release: SyntheticRelease) -> dict[str, Any]:
    """BadRequest when the release spends more than the epsilon it declares, or more than the dataset's
    budget has left (its charges so far and the rounds approved projects reserve); else what the ledger
    records: the epsilon at the budget's delta and what is spent and left after it."""
    charge = synthetic_charge(release)
    found = privacy_budget.epsilon_of([charge], release.delta)
    if found > release.epsilon * (1 + EPSILON_SLACK):
        raise BadRequest(f"synthetic: {release.measurements} Gaussian measurements at noise multiplier "
                         f"{release.noise_multiplier:g} spend epsilon {found:.4f} at delta {release.delta:g}, "
                         f"more than the declared {release.epsilon:g}")
    detail: dict[str, Any] = {"epsilon": release.epsilon, "delta": release.delta,
                              "noise_multiplier": release.noise_multiplier,
                              "measurements": release.measurements, "generator": release.generator}
    budget = budget_of(dataset)
    if budget is None:
        return detail
    ref = f"{dataset.org.name}/{dataset.name}"
    held, holders = reserved(session, dataset)
    check = privacy_budget.verdict(budget, charges(session, dataset.id), [charge], held)
    if not check.fits:
        raise BadRequest(f"synthetic: privacy budget of {ref} would pass ε = {budget.epsilon:g} at δ = "
                         f"{budget.delta:.3g} (spent {check.spent:.2f}, reserved {check.reserved:.2f}"
                         + (f" by {', '.join(holders)}" if holders else "")
                         + f", this release {check.added:.2f}, together {check.total:.2f}); nothing was published")
    return detail | {"budget_delta": budget.delta, "epsilon_at_budget_delta": round(check.added, 6),
                     "spent_epsilon": round(privacy_budget.epsilon_of(
                         [*charges(session, dataset.id), charge], budget.delta), 6)}


def check(session: Session, dataset: Dataset, body: OpenVersionIn) -> dict[str, Any] | None:
    """BadRequest for a publish the policy or the budget refuses; the synthetic release's ledger detail."""
    if body.synthetic is not None:
        return check_synthetic(session, dataset, body.synthetic)
    refusal = anonymity_refusal(body.anonymity, rules(session))
    if refusal is not None:
        raise BadRequest(refusal)
    return None
