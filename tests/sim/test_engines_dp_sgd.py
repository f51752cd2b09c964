"""Sample-level DP-SGD in the simulator: the loop engine trains every client with Opacus, the digits model
still learns, the vectorised engine hands over to the loop (or refuses when built directly), and the card
states the per-record guarantee."""

from __future__ import annotations

import json

import pytest

from consortium.fl.core import FLError
from consortium.sim.engines.factory import make_engine
from consortium.sim.engines.vectorized import VectorizedEngine
from consortium.sim.outputs import write_model
from consortium.sim.simulation import Simulation
from consortium.sim.spec import parse_spec

SPEC = {
    "name": "digits-dp-sgd",
    "algorithm": {"name": "classifier", "hyperparameters": {"layers": [64, 32, 10], "lr": 0.5,
                                                            "batch_size": 32}},
    "rounds": 6,
    "privacy": {"mechanism": "dp_sgd", "clip": 1.0, "epsilon": 8.0, "delta": 1e-5},
}


def test_dp_sgd_trains_digits_above_chance_and_the_card_states_the_guarantee(tmp_path) -> None:
    project, settings = parse_spec(SPEC, {"clients": 4, "engine": "vectorized"})
    simulation = Simulation(project, settings)
    messages: list[str] = []
    engine = make_engine(settings.engine, simulation.setup, settings, notify=messages.append)
    assert engine.name == "loop" and "DP-SGD" in messages[0]
    result = simulation.run(engine)
    assert result.final_metrics["accuracy"] > 0.5  # ten classes: chance is 0.1
    paths = write_model(tmp_path, result, engine.name)
    card = json.loads(paths["card"].read_text())
    privacy = card["privacy"]
    assert privacy["mechanism"] == "dp_sgd" and privacy["unit"] == "record"
    (guarantee,) = privacy["per_dataset"].values()
    sizes = sorted(len(part) for part in simulation.parts)
    assert guarantee["epsilon"] <= 8.0 and guarantee["delta"] == 1e-5 and guarantee["clip"] == 1.0
    assert guarantee["rows"] in sizes and guarantee["batch_size"] == 32
    assert guarantee["steps_per_round"] == -(-guarantee["rows"] // 32)
    assert guarantee["rounds"] == 6 * guarantee["steps_per_round"]
    assert guarantee["sampling_rate"] == pytest.approx(1 / guarantee["steps_per_round"])
    assert guarantee["noise_multiplier"] > 0 and "RDP" in guarantee["accountant"]
    markdown = paths["card_markdown"].read_text()
    assert "## Privacy (sample-level differential privacy, DP-SGD)" in markdown


def test_the_vectorised_engine_itself_refuses_dp_sgd() -> None:
    project, settings = parse_spec(SPEC, {"clients": 2})
    simulation = Simulation(project, settings)
    with pytest.raises(FLError, match="does not run DP-SGD"):
        VectorizedEngine(simulation.setup)


def test_the_ray_engine_refuses_dp_sgd() -> None:
    project, settings = parse_spec(SPEC, {"clients": 2})
    simulation = Simulation(project, settings)
    with pytest.raises(FLError, match="does not run DP-SGD"):
        make_engine("ray", simulation.setup, settings)
