"""What a model card says about privacy: per data source, the (epsilon, delta) guarantee of the run and how
it was obtained (:class:`~consortium.fl.privacy.accountant.PrivacyGuarantee`), in JSON and in Markdown."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from consortium.fl.privacy.spec import DpPlan


def card_section(
    plan: DpPlan | None, refs: Iterable[str], budgets: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """``{"privacy": {...}}`` for a card (empty without DP): the noise placement and each source's guarantee,
    with, for a source whose owner set a privacy budget, ``budget`` (its epsilon, delta, spent and left once
    the run is over; ``budgets`` maps the source's ref to them)."""
    if plan is None:
        return {}
    guarantee = plan.guarantee.as_dict()
    budgets = budgets or {}
    per_dataset = {ref: dict(guarantee) | ({"budget": dict(budgets[ref])} if ref in budgets else {})
                   for ref in refs}
    return {"privacy": {"noise": plan.noise.value, "per_dataset": per_dataset}}


def markdown_lines(card: dict[str, Any]) -> list[str]:
    """The card's privacy section in Markdown (none when the run had no DP)."""
    privacy = card.get("privacy")
    if not privacy:
        return []
    lines = ["", "## Privacy (client-level differential privacy)", "",
             f"Noise added {'by each node' if privacy['noise'] == 'local' else 'by the server'} "
             f"({privacy['noise']}); each data source's guarantee over the whole run:", "",
             "| dataset | epsilon | delta | mechanism | accountant | rounds | sampling | noise multiplier | clip |",
             "|---|---|---|---|---|---|---|---|---|"]
    for ref, g in privacy["per_dataset"].items():
        lines.append(
            f"| {ref} | {g['epsilon']:.4g} | {g['delta']:.3g} | {g['mechanism']} | {g['accountant']} | "
            f"{g['rounds']} | {g['sampling']}, rate {g['sampling_rate']:.4g} | {g['noise_multiplier']:.4g} | "
            f"{g['clip']:.4g} |"
        )
    budgets = {ref: g["budget"] for ref, g in privacy["per_dataset"].items() if "budget" in g}
    if budgets:
        lines += ["", "Owners' privacy budgets over every run, after this one (their nodes refuse rounds past them):",
                  "", "| dataset | budget epsilon | delta | spent | left |", "|---|---|---|---|---|"]
        lines += [f"| {ref} | {b['epsilon']:.4g} | {b['delta']:.3g} | {b['spent']:.4g} | {b['left']:.4g} |"
                  for ref, b in budgets.items()]
    return lines
