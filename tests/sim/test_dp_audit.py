"""`audit dp` in simulation: power without noise, never above the claimed epsilon with strong noise."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from consortium.fl.core import FLError, StackedUpdates
from consortium.sim.dp_audit import CanaryMechanism, run_dp_audit

SPEC = {
    "name": "audit-tiny",
    "algorithm": {"name": "classifier", "hyperparameters": {"layers": [64, 16, 10], "optimizer": "sgd", "lr": 0.1,
                                                            "local_epochs": 1, "batch_size": 32}},
    "strategy": {"name": "fedavg"},
    "rounds": 3,
    "seed": 0,
    "simulation": {"dataset": "digits", "clients": 5, "partition": "iid", "cohort": 1.0},
}


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    return path


def test_without_noise_the_audit_has_power(spec: Path) -> None:
    report = run_dp_audit(spec, 100, 20, clip=1.0, noise_multiplier=0.0, delta=1e-5)
    assert math.isinf(report.epsilon_claimed)
    assert report.outcome.epsilon_lower >= 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_with_strong_noise_the_bound_stays_below_the_claim(spec: Path, seed: int) -> None:
    report = run_dp_audit(spec, 100, 20, clip=1.0, noise_multiplier=4.0, delta=1e-5, seed=seed)
    assert report.epsilon_claimed < 2.0
    assert report.outcome.epsilon_lower <= report.epsilon_claimed


def test_cohort_sampling_sets_the_canaries_rate(spec: Path) -> None:
    report = run_dp_audit(spec, 20, 5, clip=1.0, noise_multiplier=1.0, overrides={"cohort": 0.6})
    assert report.sampling_rate == pytest.approx(0.6)


def test_a_robust_rule_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "median.json"
    path.write_text(json.dumps({**SPEC, "strategy": {"name": "median"}}))
    with pytest.raises(FLError, match="fedavg"):
        run_dp_audit(path, 20, 5, clip=1.0, noise_multiplier=1.0)


def test_the_mechanism_clips_adds_canaries_and_averages_over_the_cohort() -> None:
    params = {"w": torch.zeros(4)}
    updates = StackedUpdates({"w": torch.tensor([[3.0, 4.0, 0, 0], [0, 0, 0.3, 0.4]])},
                             torch.ones(2, dtype=torch.float64), ("a", "b"))
    directions = torch.eye(4, dtype=torch.float64)[:2]
    mechanism = CanaryMechanism(directions, np.array([True, False]), clip=1.0, sampling_rate=1.0, seed=0,
                                clips=True)
    out = mechanism(params, updates)
    # (clip([3, 4]) = [0.6, 0.8]) + [0, 0, 0.3, 0.4] + canary 0 ([1, 0, 0, 0]), over 2 clients
    assert torch.allclose(out.tensors["w"][0], torch.tensor([0.8, 0.4, 0.15, 0.2]))


def test_the_audit_reads_clip_and_epsilon_from_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "dp.json"
    privacy = {"noise": "central", "clip": 0.7, "epsilon": 2.0, "delta": 1e-6}
    path.write_text(json.dumps({**SPEC, "privacy": privacy}))
    report = run_dp_audit(path, 20, 5)
    assert report.clip == 0.7 and report.outcome.delta == 1e-6 and report.noise == "central"
    assert report.epsilon_target == pytest.approx(2.0, rel=1e-3)
    assert report.epsilon_claimed <= 2.0 * (1 + 1e-6)
    assert report.noise_multiplier > 0


def test_flags_override_the_spec_and_no_dp_needs_a_flag(tmp_path: Path, spec: Path) -> None:
    path = tmp_path / "dp.json"
    path.write_text(json.dumps({**SPEC, "privacy": {"clip": 0.7, "epsilon": 2.0, "delta": 1e-6}}))
    overridden = run_dp_audit(path, 20, 5, clip=0.3, epsilon=8.0)
    assert overridden.clip == 0.3 and overridden.epsilon_target == pytest.approx(8.0, rel=1e-3)
    assert run_dp_audit(path, 20, 5, noise_multiplier=0.0).noise == "none"
    with pytest.raises(FLError, match="no `privacy` block"):
        run_dp_audit(spec, 20, 5)


def test_the_canaries_go_through_the_engines_own_noise(spec: Path) -> None:
    """Same canaries, same training: only the engines' central noise tells the two runs apart."""
    quiet = run_dp_audit(spec, 40, 10, clip=1.0, noise_multiplier=0.0)
    noisy = run_dp_audit(spec, 40, 10, clip=1.0, noise_multiplier=50.0)
    assert noisy.outcome.correct < quiet.outcome.correct
