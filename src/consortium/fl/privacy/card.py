"""What a model card says about privacy: per data source, the (epsilon, delta) guarantee of the run and how
it was obtained (:class:`~consortium.fl.privacy.accountant.PrivacyGuarantee`), in JSON and in Markdown."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from consortium.fl.privacy.spec import DpPlan


def card_section(plan: DpPlan | None, refs: Iterable[str]) -> dict[str, Any]:
    """``{"privacy": {...}}`` for a card (empty without DP): the noise placement and each source's guarantee."""
    if plan is None:
        return {}
    guarantee = plan.guarantee.as_dict()
    return {"privacy": {"noise": plan.noise.value, "per_dataset": {ref: dict(guarantee) for ref in refs}}}


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
    return lines
