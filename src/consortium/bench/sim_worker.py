"""One configuration of `consortium bench sim`, run in its own process so its memory is measured alone.

It runs the reference workload (:mod:`consortium.bench.peers.workload`: digits, its Dirichlet partition and
the initial MLP weights) through the simulator with one engine; the result JSON has the same keys as the peer
runners' (``round_s``, ``mean_round_s_excl_first``, ``final_test_acc``).

Usage: python -m consortium.bench.sim_worker --engine vectorized --clients 100 --out X.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from consortium.bench.peers import workload
from consortium.fl.core import LocalData
from consortium.sim.datasets import SimDataset
from consortium.sim.engines.factory import make_engine
from consortium.sim.simulation import Simulation
from consortium.sim.spec import parse_spec


def reference_workload(clients: int) -> tuple[SimDataset, list[np.ndarray], dict[str, torch.Tensor]]:
    """The reference workload's data, partition over ``clients`` and initial weights, in the simulator's terms."""
    x_train, y_train, x_test, y_test = workload.digits()
    dataset = SimDataset("digits", LocalData(x_train, y_train), LocalData(x_test, y_test), "CC-BY-4.0")
    parts = list(workload.client_rows(clients))
    initial = {
        f"layers.{name}": tensor.detach().clone() for name, tensor in workload.initial_model().state_dict().items()
    }
    return dataset, parts, initial


def spec(rounds: int, seed: int = 0) -> dict[str, Any]:
    """The reference workload as a project spec: MLP 64-128-10, SGD lr 0.05, batch 32, 1 local epoch, FedAvg."""
    return {
        "name": "bench-sim",
        "algorithm": {
            "name": "classifier",
            "hyperparameters": {
                "layers": [64, 128, 10],
                "activation": "relu",
                "optimizer": "sgd",
                "lr": 0.05,
                "local_epochs": 1,
                "batch_size": 32,
            },
        },
        "strategy": {"name": "fedavg"},
        "rounds": rounds,
        "seed": seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ray-actors", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="spec seed: the clients' local shuffles")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    started = time.perf_counter()
    workload.set_threads()
    dataset, parts, initial = reference_workload(args.clients)
    project, settings = parse_spec(
        spec(args.rounds, args.seed),
        {
            "clients": args.clients,
            "engine": args.engine,
            "device": args.device,
            "ray_actors": args.ray_actors,
        },
    )
    simulation = Simulation(project, settings, dataset=dataset, parts=parts, initial_params=initial)
    engine = make_engine(settings.engine, simulation.setup, settings)
    try:
        setup_s = time.perf_counter() - started
        result = simulation.run(engine)
    finally:
        engine.close()
    rounds = [r.wall_s for r in result.rounds]
    record = {
        "runner": f"consortium-{args.engine}",
        "num_clients": args.clients,
        "rounds": args.rounds,
        "torch_threads": torch.get_num_threads(),
        "setup_s": setup_s,
        "round_s": rounds,
        "mean_round_s_excl_first": sum(rounds[1:]) / max(len(rounds) - 1, 1),
        "acc_per_round": [r.test["accuracy"] for r in result.rounds],
        "final_test_acc": result.rounds[-1].test["accuracy"],
    }
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
