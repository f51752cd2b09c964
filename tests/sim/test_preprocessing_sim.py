"""The simulator fits a spec's preprocessing from its clients' statistics, as a real run does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from consortium.sim.datasets import load_dataset
from consortium.sim.outputs import model_card, render_card, summary
from consortium.sim.runner import simulate

SPEC = {
    "name": "bc", "rounds": 20, "seed": 0,
    "algorithm": {"name": "classifier", "hyperparameters": {
        "layers": [30, 2], "optimizer": "sgd", "lr": 0.05, "local_epochs": 2, "batch_size": 32}},
    "simulation": {"dataset": "breast_cancer", "clients": 4, "partition": "dirichlet:1.0"},
}


def _centralised_standardised() -> float:
    data = load_dataset("breast_cancer", raw=True)
    scaler = StandardScaler().fit(data.train.x.numpy())
    model = LogisticRegression(max_iter=5000).fit(scaler.transform(data.train.x.numpy()), data.train.y.numpy())
    return float(model.score(scaler.transform(data.test.x.numpy()), data.test.y.numpy()))


def test_raw_breast_cancer_with_standardise_reaches_centralised_standardised_accuracy():
    torch.set_num_threads(1)
    result = simulate({**SPEC, "preprocessing": {"scale": "standardise"}})
    assert result.final_metrics["accuracy"] == pytest.approx(_centralised_standardised(), abs=0.02)
    fitted = result.preprocessing
    raw = load_dataset("breast_cancer", raw=True).train.x.double().numpy()
    assert np.allclose(fitted.shift, raw.mean(axis=0), rtol=1e-6)
    assert np.allclose(fitted.scale, raw.std(axis=0), rtol=1e-4)
    card = model_card(result, "vectorized", "0" * 64)
    assert card["preprocessing"]["spec"]["scale"] == "standardise"
    assert card["baseline"]["majority_class"]["accuracy"] == pytest.approx(72 / 114)
    assert card["warnings"] == []
    assert "**Preprocessing**" in render_card(card) and "**Baseline**" in render_card(card)


def test_a_model_that_does_not_beat_the_majority_class_is_warned_about():
    torch.set_num_threads(1)
    # Unscaled raw columns (impute only): one round of SGD on features up to 4,000 lands on one class.
    result = simulate({**SPEC, "rounds": 1, "preprocessing": {"impute": "mean"}})
    out = summary(result, "vectorized")
    assert out["final_metrics"]["accuracy"] < out["baseline"]["majority_class"]["accuracy"]
    assert "does not beat the majority-class baseline" in out["warnings"][0]


def test_without_preprocessing_the_bundled_tables_stay_standardised():
    data = load_dataset("breast_cancer")
    assert abs(float(data.train.x.mean())) < 1e-3
    assert float(load_dataset("breast_cancer", raw=True).train.x.max()) > 1000


def test_sim_run_prints_the_baseline_and_the_warning(tmp_path):
    import io
    import json

    from rich.console import Console

    from consortium.sim.runner import run_simulation

    torch.set_num_threads(1)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**SPEC, "rounds": 1, "preprocessing": {"impute": "mean"}}))
    out = io.StringIO()
    run_simulation(path, {}, console=Console(file=out, width=300))
    text = out.getvalue()
    assert "majority-class baseline: accuracy 0.6316" in text
    assert "warning: test accuracy" in text
