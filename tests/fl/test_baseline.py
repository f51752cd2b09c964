"""The majority-class baseline and the warning when a model does not beat it."""

from __future__ import annotations

import torch

from consortium.fl.baseline import baseline_warning, card_section, majority_baseline, markdown_lines


def test_the_baseline_is_the_most_frequent_label_share_and_none_without_class_labels():
    assert majority_baseline(torch.tensor([0, 1, 1, 1])) == {"label": 1, "accuracy": 0.75, "examples": 4}
    assert majority_baseline(torch.tensor([0.5, 1.5])) is None
    assert majority_baseline(None) is None


def test_a_model_at_or_below_the_baseline_is_warned_about_and_one_above_is_not():
    baseline = majority_baseline(torch.tensor([0] * 63 + [1] * 37))
    assert "does not beat the majority-class baseline 0.6300" in baseline_warning(baseline, {"accuracy": 0.63})
    assert baseline_warning(baseline, {"accuracy": 0.9}) is None
    assert baseline_warning(baseline, {"loss": 0.1}) is None
    section = card_section(baseline, {"accuracy": 0.5})
    assert section["baseline"]["majority_class"]["label"] == 0 and len(section["warnings"]) == 1
    assert any(line.startswith("- **Warning**") for line in markdown_lines(section))
    assert card_section(None, {"accuracy": 0.5}) == {}
