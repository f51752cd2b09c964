"""The vectorised engine computes what the per-client loop computes; specs fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from consortium.fl.core import FLError
from consortium.sim.engines.factory import make_engine
from consortium.sim.simulation import Simulation
from consortium.sim.runner import simulate
from consortium.sim.spec import parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MLP = {
    "name": "sim-test",
    "algorithm": {"name": "classifier", "hyperparameters": {"layers": [64, 32, 10], "lr": 0.05}},
    "rounds": 10,
}


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[name] - b[name]).abs().max()) for name in a)


@pytest.mark.parametrize("clients", [10, 100, 1000])
def test_vectorized_equals_loop_after_ten_rounds(clients: int) -> None:
    loop = simulate(MLP, clients=clients, engine="loop")
    vectorized = simulate(MLP, clients=clients, engine="vectorized")
    assert max_difference(loop.params, vectorized.params) <= 1e-5
    assert vectorized.final_metrics["accuracy"] == pytest.approx(loop.final_metrics["accuracy"], abs=1e-9)
    assert [r.num_examples for r in vectorized.rounds] == [r.num_examples for r in loop.rounds]


def test_sampled_cohorts_momentum_and_chunks_agree_with_loop() -> None:
    spec = MLP | {
        "rounds": 4,
        "algorithm": {
            "name": "classifier",
            "hyperparameters": {
                "layers": [64, 16, 10],
                "lr": 0.05,
                "momentum": 0.9,
                "local_epochs": 2,
                "batch_size": 16,
            },
        },
    }
    loop = simulate(spec, clients=60, cohort=0.25, partition="shards:2", engine="loop")
    chunked = simulate(
        spec, clients=60, cohort=0.25, partition="shards:2", engine="vectorized", chunk_clients=4
    )
    assert all(r.clients == 15 for r in loop.rounds)
    assert max_difference(loop.params, chunked.params) <= 1e-5


def test_kmeans_vectorized_equals_loop() -> None:
    spec = {"name": "km", "algorithm": {"name": "kmeans", "hyperparameters": {"k": 10}}, "rounds": 5}
    loop = simulate(spec, clients=50, engine="loop")
    vectorized = simulate(spec, clients=50, engine="vectorized")
    assert max_difference(loop.params, vectorized.params) <= 1e-9
    assert loop.final_metrics["inertia_per_sample"] == pytest.approx(
        vectorized.final_metrics["inertia_per_sample"]
    )


def test_same_seed_same_result_and_learning_happens() -> None:
    first = simulate(MLP | {"rounds": 5}, clients=20, partition="iid")
    second = simulate(MLP | {"rounds": 5}, clients=20, partition="iid")
    assert max_difference(first.params, second.params) == 0.0
    assert first.rounds[-1].test["accuracy"] > first.rounds[0].test["accuracy"]


@pytest.mark.parametrize(
    ("spec", "overrides", "message"),
    [
        (MLP | {"algorithm": {"name": "xgboost"}}, {}, "unknown algorithm 'xgboost'; known: "),
        (MLP, {"partition": "dirichlet:0"}, "alpha must be a finite number > 0"),
        (MLP, {"partition": "shards:2", "clients": 1000}, "2000 shards exceed the 1437 samples"),
        (MLP, {"clients": 0}, "clients: Input should be greater than or equal to 1"),
        (MLP, {"cohort": 2.5}, "cohort: Value error, a cohort above 1 is a count"),
        (MLP, {"cohort": 50, "clients": 10}, "cohort: 50 clients per round exceed the 10 clients"),
        (MLP, {"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
        (MLP, {"device": "tpu"}, "--device 'tpu'"),
        (MLP | {"rounds": 0}, {}, "rounds: Input should be greater than or equal to 1"),
        (
            MLP | {"algorithm": {"name": "classifier", "hyperparameters": {"layers": [64, 10], "lr": -1}}},
            {},
            "lr: Input should be greater than 0",
        ),
        (MLP | {"strategy": {"name": "fedsgd"}}, {}, "unknown strategy 'fedsgd'"),
    ],
)
def test_bad_specs_fail_with_a_clear_message(spec: dict, overrides: dict, message: str) -> None:
    with pytest.raises(FLError, match=message.replace("(", r"\(").replace(")", r"\)")):
        project, settings = parse_spec(spec, overrides)
        Simulation(project, settings)


def test_model_whose_input_width_does_not_fit_the_data_fails_before_training() -> None:
    spec = MLP | {"algorithm": {"name": "classifier", "hyperparameters": {"layers": [10, 3]}}}
    with pytest.raises(FLError, match="first layer width"):
        simulate(spec, clients=5)


def test_cuda_request_without_a_gpu_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(FLError, match="no CUDA device"):
        simulate(MLP, device="cuda")


def test_ray_engine_on_two_actors_equals_loop() -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    spec = MLP | {"rounds": 3}
    loop = simulate(spec, clients=30, engine="loop")
    on_ray = simulate(spec, clients=30, engine="ray", ray_actors=2)
    assert max_difference(loop.params, on_ray.params) <= 1e-5
    assert on_ray.rounds[-1].num_examples == loop.rounds[-1].num_examples
    assert on_ray.rounds[-1].train == pytest.approx(loop.rounds[-1].train)


def test_server_optimizer_and_robust_rule_run_in_the_vectorized_engine_like_the_loop() -> None:
    spec = MLP | {
        "rounds": 3,
        "strategy": {
            "name": "trimmed_mean",
            "options": {"beta": 0.1},
            "server_optimizer": {"name": "adam", "options": {"lr": 0.01}},
        },
    }
    loop = simulate(spec, clients=20, engine="loop")
    vectorized = simulate(spec, clients=20, engine="vectorized", chunk_clients=6)
    assert max_difference(loop.params, vectorized.params) <= 1e-5


def test_a_rule_that_cannot_work_with_the_cohort_is_refused_before_training() -> None:
    spec = MLP | {"strategy": {"name": "krum", "options": {"f": 4}}}
    with pytest.raises(FLError, match="krum"):
        simulate(spec, clients=8)


def test_an_algorithm_without_a_batched_update_falls_back_to_the_loop_with_a_message(tmp_path) -> None:
    from consortium.sim.outputs import write_model

    spec = {"name": "gan-small", "rounds": 1, "algorithm": {"name": "gan", "hyperparameters": {
        "num_features": 64, "num_classes": 10, "latent_dim": 8, "generator_hidden": [16],
        "discriminator_hidden": [16], "local_steps": 2, "batch_size": 16}}}
    project, settings = parse_spec(spec, {"clients": 3, "engine": "vectorized"})
    simulation = Simulation(project, settings)
    messages: list[str] = []
    engine = make_engine(settings.engine, simulation.setup, settings, notify=messages.append)
    assert engine.name == "loop"
    assert messages and "falling back to the loop engine" in messages[0]
    result = simulation.run(engine)
    assert {"conditioning_accuracy", "frechet_distance"} <= set(result.final_metrics)
    paths = write_model(tmp_path, result, engine.name)
    assert paths["samples"].read_bytes().startswith(b"\x89PNG")


def test_cnn_example_on_image_rows_vectorized_equals_loop() -> None:
    """The CIFAR-shaped CNN example, small: convolutions under vmap give the loop engine's params."""
    spec = json.loads((EXAMPLES / "cnn-synthetic-images.json").read_text())
    spec["rounds"] = 2
    small = {"samples": 250, "clients": 4}
    loop = simulate(spec, engine="loop", **small)
    vectorized = simulate(spec, engine="vectorized", **small)
    assert "conv.1.weight" in loop.params
    assert max_difference(loop.params, vectorized.params) <= 1e-5
    assert vectorized.final_metrics["accuracy"] == pytest.approx(loop.final_metrics["accuracy"], abs=1e-9)


def test_the_reducer_hands_a_strategy_without_aggregate_stacked_tampered_per_client_updates() -> None:
    """A plugin strategy with ``aggregate`` only gets each client's update, in canonical order, after the
    tamper hook (an attack harness's malicious clients reach it too)."""
    from consortium.fl.core import StackedUpdates
    from consortium.sim.engines.reducer import CohortReducer

    class Plain:
        name, linear = "plain", False

        def check_cohort(self, num_clients: int) -> None:
            pass

        def aggregate(self, params, updates):
            self.seen = [(u.client_id, u.num_examples, float(u.tensors["w"][0])) for u in updates]
            return {"w": sum(u.tensors["w"] for u in updates)}

    def flip_first(params, updates: StackedUpdates) -> StackedUpdates:
        tensors = {"w": updates.tensors["w"].clone()}
        tensors["w"][0] = -tensors["w"][0]
        return StackedUpdates(tensors, updates.num_examples, updates.client_ids)

    strategy = Plain()
    reducer = CohortReducer(strategy, {"w": torch.zeros(1)}, tamper=flip_first)
    reducer.add({"w": torch.tensor([[3.0], [1.0]])}, torch.tensor([30, 10]), ("c3", "c1"))
    reducer.add({"w": torch.tensor([[2.0]])}, torch.tensor([20]), ("c2",))
    assert torch.equal(reducer.result()["w"], torch.tensor([4.0]))
    assert strategy.seen == [("c1", 10, -1.0), ("c2", 20, 2.0), ("c3", 30, 3.0)]
