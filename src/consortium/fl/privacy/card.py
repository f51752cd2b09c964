"""What a model card says about privacy: per data source, the (epsilon, delta) guarantee of the run and how
it was obtained (:class:`~consortium.fl.privacy.accountant.PrivacyGuarantee`), and the audits run on it
(``privacy.audit.dp``, ``privacy.audit.mia``), in JSON and in Markdown."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from consortium.fl.privacy.dp_sgd import MECHANISM as DP_SGD
from consortium.fl.privacy.dp_sgd import DpSgdPlan
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
    section: dict[str, Any] = {"noise": plan.noise.value, "per_dataset": per_dataset}
    if plan.adaptive is not None:
        section["adaptive_clip"] = {
            "initial_clip": plan.adaptive.initial_clip, "target_quantile": plan.adaptive.target_quantile,
            "learning_rate": plan.adaptive.learning_rate, "count_noise_std": plan.adaptive.count_noise_std,
            "update_noise_multiplier": plan.update_noise_multiplier}
    return {"privacy": section}


def dp_sgd_section(
    plans: Mapping[str, DpSgdPlan], budgets: Mapping[str, Mapping[str, Any]] | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """``{"privacy": {...}}`` for a DP-SGD run: each source's per-record guarantee over the whole run (its
    ``rounds`` are DP-SGD steps), its steps per round, rows and batch size, and its budget as in
    :func:`card_section`; ``note`` says what the numbers stand for when a source is not one dataset."""
    budgets = budgets or {}
    per_dataset = {
        ref: plan.guarantee.as_dict() | {"steps_per_round": plan.steps_per_round, "rows": plan.rows,
                                         "batch_size": plan.batch_size}
        | ({"budget": dict(budgets[ref])} if ref in budgets else {})
        for ref, plan in plans.items()}
    return {"privacy": {"mechanism": DP_SGD, "unit": "record", "per_dataset": per_dataset}
            | ({"note": note} if note else {})}


AUDIT_KINDS = ("dp", "mia")


def dp_audit_entry(report: Mapping[str, Any], on: date) -> dict[str, Any]:
    """What a card keeps of a one-run DP audit: epsilon claimed (None without DP) and its 95 % lower bound,
    m canaries, k guesses per side, the correct guesses, the DP settings audited and the date."""
    claimed = report["epsilon_claimed"]
    return {"epsilon_claimed": None if math.isinf(claimed) else claimed, "epsilon_lower": report["epsilon_lower"],
            "confidence": report["confidence"], "delta": report["delta"], "m": report["canaries"],
            "k": report["guesses"] // 2, "correct": report["correct"], "guesses": report["guesses"],
            "noise": report["noise"], "noise_multiplier": report["noise_multiplier"], "clip": report["clip"],
            "rounds": report["rounds"], "date": on.isoformat()}


def mia_audit_entry(report: Mapping[str, Any], on: date) -> dict[str, Any]:
    """What a card keeps of a membership-inference audit: each attack's AUC and TPR at 1 % FPR, and the date."""
    return {"members": report["members"], "non_members": report["non_members"],
            "loss_threshold": dict(report["loss_threshold"]), "shadow_model": dict(report["shadow_model"]),
            "date": on.isoformat()}


def with_audit(card: Mapping[str, Any], kind: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``card`` with ``entry`` as its ``privacy.audit.<kind>`` (replacing an earlier one)."""
    if kind not in AUDIT_KINDS:
        raise ValueError(f"audit kind must be one of {AUDIT_KINDS}, got {kind!r}")
    privacy = dict(card.get("privacy") or {})
    privacy["audit"] = {**privacy.get("audit", {}), kind: dict(entry)}
    return {**card, "privacy": privacy}


def audit_lines(audit: Mapping[str, Any]) -> list[str]:
    """The audits in Markdown: one table row per audit run on the model."""
    if not audit:
        return []
    lines = ["", "### Privacy audits (measured in simulation)", ""]
    dp = audit.get("dp")
    if dp:
        claimed = "none (no DP)" if dp["epsilon_claimed"] is None else f"{dp['epsilon_claimed']:.3f}"
        lines += ["One-run DP audit (Steinke, Nasr and Jagielski 2023):", "",
                  "| epsilon claimed | epsilon lower bound | confidence | delta | m | k | correct | date |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| {claimed} | {dp['epsilon_lower']:.3f} | {dp['confidence']:.0%} | {dp['delta']:.3g} | "
                  f"{dp['m']} | {dp['k']} | {dp['correct']} | {dp['date']} |", ""]
    mia = audit.get("mia")
    if mia:
        lines += [f"Membership inference ({mia['members']} members, {mia['non_members']} non-members):", "",
                  "| attack | AUC | TPR at 1 % FPR | date |", "|---|---|---|---|"]
        for name, key in (("loss threshold", "loss_threshold"), ("shadow model", "shadow_model")):
            lines.append(f"| {name} | {mia[key]['auc']:.3f} | {mia[key]['tpr_at_1pct_fpr']:.3f} | {mia['date']} |")
    return lines


def markdown_lines(card: dict[str, Any]) -> list[str]:
    """The card's privacy section in Markdown: the guarantee (when the run had DP) and any audits."""
    privacy = card.get("privacy")
    if not privacy:
        return []
    if "per_dataset" not in privacy:
        return ["", "## Privacy", "", "The run had no differential privacy."] + audit_lines(privacy["audit"])
    lines = _dp_sgd_lines(privacy) if privacy.get("mechanism") == DP_SGD else _dp_fedavg_lines(privacy)
    budgets = {ref: g["budget"] for ref, g in privacy["per_dataset"].items() if "budget" in g}
    if budgets:
        lines += ["", "Owners' privacy budgets over every run, after this one (their nodes refuse rounds past them):",
                  "", "| dataset | budget epsilon | delta | spent | left |", "|---|---|---|---|---|"]
        lines += [f"| {ref} | {b['epsilon']:.4g} | {b['delta']:.3g} | {b['spent']:.4g} | {b['left']:.4g} |"
                  for ref, b in budgets.items()]
    return lines + audit_lines(privacy.get("audit", {}))


def _dp_fedavg_lines(privacy: Mapping[str, Any]) -> list[str]:
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
    adaptive = privacy.get("adaptive_clip")
    if adaptive:
        lines += ["", f"Adaptive clipping (Andrew et al. 2021): the clip starts at {adaptive['initial_clip']:.4g} and "
                  f"follows the {adaptive['target_quantile']:.3g} quantile of the update norms (learning rate "
                  f"{adaptive['learning_rate']:.3g}); the clipped count is released with noise std "
                  f"{adaptive['count_noise_std']:.4g} and the updates with noise multiplier "
                  f"{adaptive['update_noise_multiplier']:.4g}, together the noise multiplier accounted above."]
    return lines


def _dp_sgd_lines(privacy: Mapping[str, Any]) -> list[str]:
    lines = ["", "## Privacy (sample-level differential privacy, DP-SGD)", "",
             "Each node trained with DP-SGD (Opacus: Poisson-sampled batches, every example's gradient clipped, "
             "Gaussian noise on their sum); each record's guarantee in each data source over the whole run:", "",
             "| dataset | epsilon | delta | accountant | steps (per round) | sampling rate | noise multiplier | clip |",
             "|---|---|---|---|---|---|---|---|"]
    for ref, g in privacy["per_dataset"].items():
        lines.append(
            f"| {ref} | {g['epsilon']:.4g} | {g['delta']:.3g} | {g['accountant']} | {g['rounds']} "
            f"({g['steps_per_round']}) | {g['sampling_rate']:.4g} | {g['noise_multiplier']:.4g} | {g['clip']:.4g} |"
        )
    return lines + (["", privacy["note"]] if privacy.get("note") else [])
