"""Environment clients in the simulator: one physics variant per client, evaluation on the standard env."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consortium.cli import app
from consortium.fl.core import FLError
from consortium.fl.environments import CARTPOLE_PHYSICS, LocalEnvironment, physics_variants
from consortium.sim.engines.factory import make_engine
from consortium.sim.simulation import Simulation
from consortium.sim.spec import load_spec, parse_spec

EXAMPLE_SPEC = Path(__file__).resolve().parents[2] / "examples" / "rl-cartpole.json"
TINY_PPO = {
    "name": "rl-sim-test",
    "algorithm": {
        "name": "ppo",
        "hyperparameters": {
            "hidden": [16],
            "num_envs": 2,
            "rollout_steps": 64,
            "minibatch_size": 64,
            "eval_episodes": 5,
        },
    },
    "rounds": 2,
    "simulation": {"dataset": "env:CartPole-v1", "clients": 3},
}


def build(spec: dict, **overrides: object) -> Simulation:
    project, settings = parse_spec(spec, overrides)
    return Simulation(project, settings)


def simulate(spec: dict, **overrides: object):
    simulation = build(spec, **overrides)
    messages: list[str] = []
    engine = make_engine(
        simulation.settings.engine, simulation.setup, simulation.settings, notify=messages.append
    )
    try:
        return simulation.run(engine), messages
    finally:
        engine.close()


def test_each_client_plays_its_own_physics_variant() -> None:
    simulation = build(TINY_PPO, physics_spread=0.2, partition_seed=7)
    variants = physics_variants(3, 0.2, seed=7)
    assert simulation.setup.train == [LocalEnvironment("CartPole-v1", physics) for physics in variants]
    assert simulation.test == LocalEnvironment("CartPole-v1")
    assert simulation.dataset.num_features == 4


def test_a_run_trains_in_environments_and_is_reproducible() -> None:
    first, messages = simulate(TINY_PPO)
    second, _ = simulate(TINY_PPO)
    assert any("falling back to the loop engine" in m for m in messages)
    assert [r.num_examples for r in first.rounds] == [3 * 2 * 64] * 2
    assert all(set(r.test) == {"mean_return"} for r in first.rounds)
    assert set(first.rounds[0].train) == {"train_return", "train_episodes"}
    assert all(first.params[name].equal(second.params[name]) for name in first.params)
    assert first.final_metrics == second.final_metrics


@pytest.mark.parametrize(
    ("spec", "overrides", "message"),
    [
        (
            TINY_PPO,
            {"dataset": "digits"},
            "the 'ppo' algorithm trains in environments: use a dataset like env:",
        ),
        (
            TINY_PPO | {"algorithm": {"name": "classifier", "hyperparameters": {"layers": [4, 2]}}},
            {},
            r"the 'classifier' algorithm trains on rows of data, not in environments \('env:CartPole-v1'\)",
        ),
        (TINY_PPO, {"dataset": "env:Pong-v5"}, "unknown environment 'Pong-v5'; known: CartPole-v1"),
        (TINY_PPO, {"physics_spread": 1.5}, "physics_spread: Input should be less than 1"),
    ],
)
def test_mismatched_or_bad_environment_settings_fail_clearly(
    spec: dict, overrides: dict, message: str
) -> None:
    with pytest.raises(FLError, match=message):
        build(spec, **overrides)


def test_the_ray_engine_refuses_environment_clients() -> None:
    simulation = build(TINY_PPO)
    with pytest.raises(FLError, match="the ray engine does not run environment clients yet"):
        make_engine("ray", simulation.setup, simulation.settings)


def test_example_spec_simulates_five_orgs_with_different_physics() -> None:
    project, settings = load_spec(EXAMPLE_SPEC)
    assert project.algorithm.name == "ppo"
    assert (settings.dataset, settings.clients, settings.physics_spread) == ("env:CartPole-v1", 5, 0.3)


def test_sim_run_writes_mean_return_and_a_card_with_the_physics(tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(TINY_PPO))
    out_json, out_dir = tmp_path / "out.json", tmp_path / "model"
    result = CliRunner().invoke(
        app, ["sim", "run", str(spec_path), "--rounds", "1", "--json", str(out_json), "--out", str(out_dir)]
    )
    assert result.exit_code == 0, result.output
    assert "round" in result.output and "mean_return" in result.output
    summary = json.loads(out_json.read_text())
    assert set(summary["final_metrics"]) == {"mean_return"}
    assert summary["dataset"]["evaluation"] == CARTPOLE_PHYSICS
    card = json.loads((out_dir / "model_card.json").read_text())
    assert len(card["environments"]["clients"]) == 3
    assert card["environments"]["clients"][0] == CARTPOLE_PHYSICS | physics_variants(3, 0.3, seed=42)[0]
    assert card["license"] == "MIT"
    assert card["datasets"] == [{"ref": "sim/env:CartPole-v1", "environments": 3, "license": "MIT"}]
    markdown = (out_dir / "MODEL_CARD.md").read_text()
    assert "3 clients, one physics variant each, cohort 1.0" in markdown
    assert "## Environments: `env:CartPole-v1`, physics within ±30%" in markdown
    assert "| environment | force_mag | gravity | length | masscart | masspole |" in markdown
    assert "| evaluation (standard) | 10 | 9.8 | 0.5 | 1 | 0.1 |" in markdown
