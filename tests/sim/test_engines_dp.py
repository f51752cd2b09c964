"""With client-level DP on, the vectorised engine computes what the per-client loop computes (same clipping,
same per-client noise draws, the same central noise), and DP changes the result."""

from __future__ import annotations

import json

import pytest

from consortium.fl.core import FLError
from consortium.plan import CLIP_KEY
from consortium.sim.outputs import write_model
from consortium.sim.simulation import Simulation
from consortium.sim.runner import simulate
from consortium.sim.spec import parse_spec

MLP = {
    "name": "sim-dp",
    "algorithm": {"name": "classifier", "hyperparameters": {"layers": [64, 16, 10], "lr": 0.05}},
    "rounds": 3,
}


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[name] - b[name]).abs().max()) for name in a)


def with_privacy(noise: str, **extra) -> dict:
    return MLP | {"privacy": {"noise": noise, "clip": 0.5, "epsilon": 8.0, "delta": 1e-5,
                              "sampling": "fixed_size", **extra}}


@pytest.mark.parametrize("noise", ["local", "central"])
def test_vectorized_equals_loop_with_dp(noise: str) -> None:
    spec = with_privacy(noise)
    loop = simulate(spec, clients=40, cohort=0.5, engine="loop")
    chunked = simulate(spec, clients=40, cohort=0.5, engine="vectorized", chunk_clients=6)
    assert max_difference(loop.params, chunked.params) <= 1e-5
    plain = simulate(MLP, clients=40, cohort=0.5, engine="vectorized")
    assert max_difference(plain.params, chunked.params) > 1e-3
    assert [r.num_examples for r in chunked.rounds] == [r.num_examples for r in loop.rounds]


def test_same_seed_same_noise_and_another_seed_other_noise() -> None:
    spec = with_privacy("local", noise_multiplier=2.0, epsilon=1000.0)
    first = simulate(spec, clients=20, engine="vectorized")
    again = simulate(spec, clients=20, engine="vectorized")
    other = simulate(spec | {"seed": 1}, clients=20, engine="vectorized")
    assert max_difference(first.params, again.params) == 0
    assert max_difference(first.params, other.params) > 1e-3


def test_dp_with_a_median_and_central_noise_is_refused_before_training() -> None:
    spec = with_privacy("central") | {"strategy": {"name": "median"}}
    with pytest.raises(FLError, match="central noise"):
        simulate(spec, clients=10, engine="vectorized")


def test_without_dp_the_plan_has_no_privacy() -> None:
    project, settings = parse_spec(MLP, {"clients": 10})
    assert Simulation(project, settings).plan.privacy is None


def test_an_explicit_noise_multiplier_is_checked_at_the_cohorts_sampling_rate() -> None:
    # sigma = 1 over 3 rounds spends about 3.0 at a cohort of 4 of 40 clients (fixed size), 9.0 at rate 1
    spec = with_privacy("central", noise_multiplier=1.0, epsilon=4.0)
    project, settings = parse_spec(spec, {"clients": 40, "cohort": 0.1})
    plan = Simulation(project, settings).plan.privacy
    assert plan is not None and plan.sampling_rate == pytest.approx(0.1) and plan.noise_multiplier == 1.0
    assert 2.9 < plan.guarantee.epsilon <= 4.0
    with pytest.raises(FLError, match=r"privacy.noise_multiplier: 1.0 spends epsilon = 9.0\d* over 3 rounds"):
        Simulation(*parse_spec(spec, {"clients": 40}))


def test_adaptive_clipping_gives_the_same_run_on_both_engines_and_moves_the_clip() -> None:
    adaptive = {"target_quantile": 0.5, "learning_rate": 0.5, "count_noise_std": 2.0}
    spec = with_privacy("central", noise_multiplier=1.5, epsilon=1000.0, adaptive_clip=adaptive)
    loop = simulate(spec, clients=40, cohort=0.5, engine="loop")
    chunked = simulate(spec, clients=40, cohort=0.5, engine="vectorized", chunk_clients=6)
    assert max_difference(loop.params, chunked.params) <= 1e-5
    clip = float(loop.server_state[CLIP_KEY])
    assert clip == float(chunked.server_state[CLIP_KEY]) and clip != 0.5
    fixed = simulate(with_privacy("central", noise_multiplier=1.5, epsilon=1000.0), clients=40, cohort=0.5,
                     engine="vectorized", chunk_clients=6)
    assert max_difference(fixed.params, chunked.params) > 1e-4


def test_the_card_states_adaptive_clipping(tmp_path) -> None:
    adaptive = {"count_noise_std": 2.0}
    result = simulate(with_privacy("central", noise_multiplier=1.5, epsilon=1000.0, adaptive_clip=adaptive),
                      clients=10, engine="vectorized")
    paths = write_model(tmp_path, result, "vectorized")
    card = json.loads(paths["card"].read_text())["privacy"]
    assert card["adaptive_clip"]["initial_clip"] == 0.5 and card["adaptive_clip"]["count_noise_std"] == 2.0
    assert card["adaptive_clip"]["update_noise_multiplier"] == pytest.approx((1.5 ** -2 - 4.0 ** -2) ** -0.5)
    assert card["per_dataset"] and all(g["noise_multiplier"] == 1.5 for g in card["per_dataset"].values())
    assert "Adaptive clipping (Andrew et al. 2021): the clip starts at 0.5" in paths["card_markdown"].read_text()


@pytest.mark.parametrize(("noise", "extra"), [
    ("local", {"strategy": {"name": "trimmed_mean", "options": {"beta": 0.1}}}),  # stacked updates come back
    ("central", {}),  # partial sums come back; the clip moves with the shards' reports
])
def test_ray_engine_runs_dp_like_the_loop(noise: str, extra: dict) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    privacy = {"noise_multiplier": 1.5, "epsilon": 1000.0}
    if noise == "central":
        privacy["adaptive_clip"] = {"learning_rate": 0.5, "count_noise_std": 2.0}
    spec = with_privacy(noise, **privacy) | extra
    loop = simulate(spec, clients=20, cohort=0.5, engine="loop")
    on_ray = simulate(spec, clients=20, cohort=0.5, engine="ray", ray_actors=2)
    assert max_difference(loop.params, on_ray.params) <= 1e-5
    assert on_ray.rounds[-1].num_examples == loop.rounds[-1].num_examples
    if noise == "central":
        assert float(on_ray.server_state[CLIP_KEY]) == float(loop.server_state[CLIP_KEY]) != 0.5
