"""`consortium bench privacy` on a tiny configuration: it runs, and writes its section of BENCHMARKS.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consortium.bench.privacy import AccuracyRun, summarise, with_epsilon
from consortium.cli import app

TINY = {
    "name": "digits-tiny",
    "algorithm": {"name": "classifier", "hyperparameters": {"layers": [64, 16, 10], "optimizer": "sgd", "lr": 0.1,
                                                            "local_epochs": 1, "batch_size": 32}},
    "strategy": {"name": "fedavg"},
    "rounds": 3,
    "seed": 0,
    "simulation": {"dataset": "digits", "clients": 5, "partition": "iid", "cohort": 1.0},
}


def test_a_tiny_configuration_runs_and_writes_its_section(tmp_path: Path) -> None:
    spec, benchmarks, out = tmp_path / "spec.json", tmp_path / "BENCHMARKS.md", tmp_path / "privacy.json"
    spec.write_text(json.dumps(TINY))
    benchmarks.write_text("# Benchmarks\n\n<!-- bench:sim:begin -->\nkept\n<!-- bench:sim:end -->\n")
    result = CliRunner().invoke(app, [
        "bench", "privacy", "--spec", str(spec), "--clients", "4,8", "--epsilons", "2", "--seeds", "2",
        "--audit", "--audit-epsilons", "2", "--audit-seeds", "2", "--audit-clients", "4", "--canaries", "20",
        "--guesses", "5", "--json", str(out), "--markdown", str(benchmarks)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert {(r["clients"], r["epsilon"]) for r in report["records"]} == {(4, None), (4, 2.0), (8, None), (8, 2.0)}
    assert all(r["noise_multiplier"] > 0 for r in report["records"] if r["epsilon"] is not None)
    assert len(report["runs"]) == 8 and len(report["audits"]) == 4
    assert all(a["epsilon_lower"] <= a["epsilon_claimed"] for a in report["audits"] if a["epsilon"] is not None)
    text = benchmarks.read_text()
    assert "<!-- bench:privacy:begin -->" in text and "kept" in text
    assert "DP / no DP" in text and "epsilon lower" in text


def test_with_epsilon_keeps_the_specs_own_settings() -> None:
    spec = {**TINY, "privacy": {"clip": 0.3, "epsilon": 9.0, "delta": 1e-6, "noise_multiplier": 2.0}}
    assert with_epsilon(spec, 1.0)["privacy"] == {"noise": "central", "clip": 0.3, "delta": 1e-6,
                                                  "sampling": "poisson", "epsilon": 1.0}
    assert "privacy" not in with_epsilon(spec, None)


def test_the_time_ratio_is_against_no_dp_at_the_same_n() -> None:
    runs = [AccuracyRun(10, None, 0, 0.0, 0.9, 0.01, 0.0), AccuracyRun(10, 1.0, 0, 3.0, 0.5, 0.02, 0.0),
            AccuracyRun(99, None, 0, 0.0, 0.9, 0.1, 0.0), AccuracyRun(99, 1.0, 0, 3.0, 0.5, 0.15, 0.0)]
    ratios = {(r["clients"], r["epsilon"]): r["time_vs_no_dp"] for r in summarise(runs)}
    assert ratios[(10, 1.0)] == pytest.approx(2.0) and ratios[(99, 1.0)] == pytest.approx(1.5)
    assert ratios[(10, None)] == pytest.approx(1.0)
