"""`audit mia` in simulation: attack scores are well formed and the metrics behave on known scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from consortium.fl.core import FLError
from consortium.sim.mia import attack_scores, run_mia

SPEC = {
    "name": "mia-tiny",
    "algorithm": {"name": "classifier", "hyperparameters": {"layers": [64, 16, 10], "lr": 0.1, "batch_size": 32}},
    "strategy": {"name": "fedavg"},
    "rounds": 3,
    "seed": 0,
    "simulation": {"dataset": "digits", "clients": 5, "partition": "iid"},
}


def test_perfectly_separated_scores() -> None:
    assert attack_scores(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == {"auc": 1.0, "tpr_at_1pct_fpr": 1.0}


def test_reversed_scores_find_nothing() -> None:
    scores = attack_scores(np.array([0.0, 1.0]), np.array([2.0, 3.0]))
    assert scores["auc"] == 0.0 and scores["tpr_at_1pct_fpr"] == 0.0


def test_run_mia_on_a_tiny_spec(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    report = run_mia(path)
    assert report.members == 1437 and report.non_members == 180
    for attack in (report.loss_threshold, report.shadow_model):
        assert 0.3 < attack["auc"] < 0.8
        assert 0.0 <= attack["tpr_at_1pct_fpr"] <= 1.0


def test_mia_refuses_a_non_classifier(tmp_path: Path) -> None:
    path = tmp_path / "kmeans.json"
    path.write_text(Path("examples/kmeans-digits.json").read_text())
    with pytest.raises(FLError, match="classifier"):
        run_mia(path)
