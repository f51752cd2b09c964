"""SCAFFOLD in the simulator: both engines keep per-client control variates alike, and it beats FedAvg."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from consortium.fl import scaffold
from consortium.fl.core import FLError
from consortium.sim.engines.factory import make_engine
from consortium.sim.engines.loop import LoopEngine
from consortium.sim.engines.vectorized import VectorizedEngine
from consortium.sim.simulation import Simulation
from consortium.sim.spec import load_spec, parse_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "scaffold-digits.json"


def spec(scaffold_on: bool = True, rounds: int = 10, **hyperparameters) -> dict:
    hp = {"layers": [64, 32, 10], "lr": 0.05, "local_epochs": 2, "scaffold": scaffold_on} | hyperparameters
    algorithm = {"name": "classifier", "hyperparameters": hp}
    return {"name": "scaffold-test", "algorithm": algorithm, "rounds": rounds}


def simulate(raw: dict, **overrides):
    project, settings = parse_spec(raw, overrides)
    simulation = Simulation(project, settings)
    engine = make_engine(settings.engine, simulation.setup, settings)
    return simulation.run(engine), engine, simulation


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[name] - b[name]).abs().max()) for name in a)


@pytest.mark.parametrize(
    "overrides",
    [
        {"clients": 10, "partition": "dirichlet:0.1"},
        {"clients": 100, "partition": "dirichlet:0.5"},
        {"clients": 60, "partition": "shards:2", "cohort": 0.25, "chunk_clients": 4},
    ],
)
def test_vectorized_equals_loop_with_control_variates(overrides: dict) -> None:
    loop, loop_engine, simulation = simulate(spec(), engine="loop", **overrides)
    vectorized, vectorized_engine, _ = simulate(spec(), engine="vectorized", **overrides)
    assert isinstance(loop_engine, LoopEngine) and isinstance(vectorized_engine, VectorizedEngine)
    assert max_difference(loop.params, vectorized.params) <= 1e-5
    _, loop_c = scaffold.split_broadcast(loop.server_state)
    _, vectorized_c = scaffold.split_broadcast(vectorized.server_state)
    assert max_difference(loop_c, vectorized_c) <= 1e-5
    assert max(float(t.abs().max()) for t in loop_c.values()) > 1e-3, "the server control moved"
    stacked = vectorized_engine.client_controls.stacked
    sampled = {cid for number in range(1, 11) for cid in simulation.cohort(number).client_ids}
    assert set(loop_engine.client_controls) == sampled
    trained = [i for i, cid in enumerate(simulation.ids) if cid in sampled]
    untouched = [i for i, cid in enumerate(simulation.ids) if cid not in sampled]
    for name, rows in stacked.items():
        from_loop = torch.stack([loop_engine.client_controls[simulation.ids[i]][name] for i in trained])
        assert float((from_loop - rows[trained]).abs().max()) <= 1e-5
        assert float(rows[untouched].abs().sum()) == 0.0, "clients never sampled keep c_i = 0"
    assert vectorized.final_metrics["accuracy"] == pytest.approx(loop.final_metrics["accuracy"], abs=1e-9)


def test_with_full_participation_the_server_control_is_the_mean_of_the_clients() -> None:
    result, engine, _ = simulate(spec(rounds=4), engine="vectorized", clients=12, partition="shards:2")
    _, control = scaffold.split_broadcast(result.server_state)
    for name, rows in engine.client_controls.stacked.items():
        torch.testing.assert_close(control[name], rows.mean(dim=0), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("partition", "local_epochs"), [("shards:2", 2), ("dirichlet:0.1", 5)])
def test_scaffold_beats_fedavg_on_strongly_non_iid_clients(partition: str, local_epochs: int) -> None:
    """Same seeds, data, partition and local work; only the control variates differ."""
    settings = {"clients": 10, "partition": partition}
    fedavg, _, _ = simulate(spec(False, rounds=20, lr=0.1, local_epochs=local_epochs), **settings)
    controlled, _, _ = simulate(spec(True, rounds=20, lr=0.1, local_epochs=local_epochs), **settings)
    assert controlled.final_metrics["accuracy"] >= fedavg.final_metrics["accuracy"] + 0.03
    assert controlled.final_metrics["loss"] < 0.75 * fedavg.final_metrics["loss"]


def test_the_example_spec_runs_and_learns() -> None:
    project, settings = load_spec(EXAMPLE)
    simulation = Simulation(project, settings)
    result = simulation.run(make_engine(settings.engine, simulation.setup, settings))
    assert project.algorithm.hyperparameters["scaffold"] is True
    assert result.final_metrics["accuracy"] > 0.85


def test_the_ray_engine_refuses_scaffold_and_bad_settings_are_named() -> None:
    project, settings = parse_spec(spec(), {"clients": 4, "engine": "ray"})
    simulation = Simulation(project, settings)
    with pytest.raises(FLError, match="ray engine does not keep SCAFFOLD"):
        make_engine(settings.engine, simulation.setup, settings)
    with pytest.raises(FLError, match="scaffold needs optimizer 'sgd' with momentum 0"):
        Simulation(*parse_spec(spec(momentum=0.9), {"clients": 4}))
    project, settings = parse_spec(spec(), {"clients": 4, "engine": "loop"})
    simulation = Simulation(project, settings)
    engine = make_engine(settings.engine, simulation.setup, settings)
    with pytest.raises(FLError, match="needs the server's control variate"):
        engine.fit(simulation.init_params(), simulation.cohort(1))
