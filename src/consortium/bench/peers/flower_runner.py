"""The Flower peer: the reference workload as FedAvg in Flower's simulation engine (Ray backend).

Run as a script by the Python of a virtual environment that has ``flwr[simulation]``, torch and scikit-learn
(``consortium bench sim --flower-python PY``); it needs nothing of ``consortium``, only the sibling
:mod:`workload`. Checked with flwr 1.42 (Message API: ``ClientApp``/``ServerApp``, ``FedAvg.start``,
``run_simulation``).

A round's time is the wall time between two consecutive calls of the server-side evaluation, which FedAvg makes
once before round 1 and once after each round: it covers sending the N train messages, the N client calls on
Ray's actor pool, aggregation and the test-split evaluation. Client-side evaluation is off, as in our engines.

Usage: ``python flower_runner.py --clients 100 --rounds 10 --cpus-per-client 1 --out result.json``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PEERS = Path(__file__).resolve().parent
# Ray's workers are separate interpreters started with this environment: they must find `workload` too.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PEERS), os.environ.get("PYTHONPATH")]))

import workload  # noqa: E402
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402


def shuffle_seed(server_round: int, client: int) -> int:
    """The local shuffle of ``client`` in ``server_round``: fixed by the workload, as the earlier peers had it."""
    return server_round * 100003 + client


client_app = ClientApp()


@client_app.train()
def local_epoch(message: Message, context: Context) -> Message:
    """One client's round: load the global weights, one local epoch, send the weights and the row count back."""
    workload.set_threads()
    client = int(context.node_config["partition-id"])
    x, y = workload.client_data(client, int(context.node_config["num-partitions"]))
    model = workload.initial_model()
    model.load_state_dict(message.content["arrays"].to_torch_state_dict())
    server_round = int(message.content["config"]["server-round"])
    loss = workload.train_epoch(model, x, y, shuffle_seed(server_round, client))
    reply = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"train_loss": loss, "num-examples": len(y)}),
        }
    )
    return Message(content=reply, reply_to=message)


@dataclass
class Timeline:
    """What the server app records for the report (it runs in this process, inside ``run_simulation``)."""

    clients: int = 0
    rounds: int = 0
    evaluations: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    strategy_started: float = 0.0
    strategy_ended: float = 0.0


TIMELINE = Timeline()
server_app = ServerApp()


@server_app.main()
def federate(grid: Grid, context: Context) -> None:
    """FedAvg over every client in every round, evaluating the global model on the test split after each."""
    model = workload.initial_model()
    everyone = TIMELINE.clients
    strategy = FedAvg(
        fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=everyone, min_available_nodes=everyone
    )

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, accuracy = workload.test_accuracy(model)
        TIMELINE.evaluations.append(time.perf_counter())
        if server_round > 0:
            TIMELINE.accuracies.append(accuracy)
        return MetricRecord({"loss": loss, "accuracy": accuracy})

    TIMELINE.strategy_started = time.perf_counter()
    strategy.start(
        grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=TIMELINE.rounds, evaluate_fn=evaluate
    )
    TIMELINE.strategy_ended = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--cpus-per-client", type=float, default=1.0, help="Ray CPUs per virtual client")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    TIMELINE.clients, TIMELINE.rounds = args.clients, args.rounds
    started = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=args.clients,
        backend_config={
            "client_resources": {"num_cpus": args.cpus_per_client, "num_gpus": 0.0},
            "init_args": {"include_dashboard": False},
        },
    )
    marks = TIMELINE.evaluations
    if len(marks) != args.rounds + 1:
        sys.exit(f"the simulation did not finish: {len(marks)} evaluations for {args.rounds} rounds")
    round_s = [later - earlier for earlier, later in zip(marks, marks[1:])]
    record = {
        "runner": "flower",
        "flwr_version": __import__("flwr").__version__,
        "ray_version": __import__("ray").__version__,
        "num_clients": args.clients,
        "rounds": args.rounds,
        "cpus_per_client": args.cpus_per_client,
        "startup_s": TIMELINE.strategy_started - started,
        "round_s": round_s,
        "mean_round_s_excl_first": sum(round_s[1:]) / max(len(round_s) - 1, 1),
        "strategy_s": TIMELINE.strategy_ended - TIMELINE.strategy_started,
        "total_s": time.perf_counter() - started,
        "acc_per_round": TIMELINE.accuracies,
        "final_test_acc": TIMELINE.accuracies[-1],
        "driver_peak_rss_mb": workload.peak_rss_mb(),
    }
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
