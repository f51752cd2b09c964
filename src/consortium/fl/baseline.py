"""The majority-class baseline of a test set, and whether a model beats it: a classifier that always
predicts the most frequent label scores this accuracy without learning anything."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

BEAT_MARGIN = 0.005
"""A model's accuracy must exceed the baseline by more than this to count as beating it."""


def majority_baseline(y: torch.Tensor | None) -> dict[str, Any] | None:
    """``{"label", "accuracy", "examples"}`` of always predicting the most frequent label of ``y``; None
    without integer labels (regression, unsupervised)."""
    if y is None or y.is_floating_point() or y.ndim != 1 or len(y) == 0:
        return None
    labels, counts = torch.unique(y, return_counts=True)
    best = int(torch.argmax(counts))
    return {"label": int(labels[best]), "accuracy": float(counts[best]) / len(y), "examples": int(len(y))}


def baseline_warning(baseline: Mapping[str, Any] | None, test: Mapping[str, float]) -> str | None:
    """A warning when the model's test accuracy does not beat the majority-class baseline; None when it does
    or when either is unknown."""
    if baseline is None or "accuracy" not in test:
        return None
    if test["accuracy"] > baseline["accuracy"] + BEAT_MARGIN:
        return None
    return (f"test accuracy {test['accuracy']:.4f} does not beat the majority-class baseline "
            f"{baseline['accuracy']:.4f} (always predicting label {baseline['label']}): the model has learnt "
            "nothing useful; check the features' scale (spec preprocessing) and the hyper-parameters")


def card_section(baseline: Mapping[str, Any] | None, test: Mapping[str, float]) -> dict[str, Any]:
    """What a model card says about the baseline: ``baseline`` (majority class on the test set) and
    ``warnings`` (the model does not beat it); nothing when there is no baseline."""
    if baseline is None:
        return {}
    warning = baseline_warning(baseline, test)
    return {"baseline": {"majority_class": dict(baseline)}, "warnings": [warning] if warning else []}


def markdown_lines(card: Mapping[str, Any]) -> list[str]:
    """The card's baseline and warnings as Markdown lines (none when the card has no baseline)."""
    majority = (card.get("baseline") or {}).get("majority_class")
    if majority is None:
        return []
    lines = [f"- **Baseline**: always predicting label {majority['label']} scores accuracy "
             f"{majority['accuracy']:.4f} on the {majority['examples']} test examples"]
    return lines + [f"- **Warning**: {warning}" for warning in card.get("warnings", [])]
