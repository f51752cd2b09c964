"""`consortium bench gpu`: the vectorised engine on an accelerator against a centralized epoch on the same device.

Two workloads, each at several N:

- ``digits``: the reference workload (:mod:`consortium.bench.peers.workload`: digits, its Dirichlet(0.5)
  partition over N clients, MLP 64-128-10 with its initial weights, batch 32, lr 0.05, one local epoch, FedAvg);
- ``cnn``: ``examples/cnn-synthetic-images.json`` (a CNN on CIFAR-shaped 3x32x32 synthetic images, 10 classes)
  with N clients of ``samples_per_client`` rows each (IID).

For each: the steady seconds per round of the simulation (median of rounds 2..R; every round also evaluates the
global model on the test split) and one centralized epoch over the same training rows with the same model,
optimiser and batch size (the classifier's own ``local_update`` on the pooled rows), timed on the same device
after a warm-up, and their ratio. Timings synchronise the device before reading the clock.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from consortium.bench.report import machine_info
from consortium.bench.sim_worker import reference_workload, spec
from consortium.fl.core import LocalData, Params
from consortium.sim.engines.factory import make_engine
from consortium.sim.simulation import Simulation, resolve_device
from consortium.sim.spec import load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
CNN_SPEC = EXAMPLES / "cnn-synthetic-images.json"


@dataclass(frozen=True)
class GpuRecord:
    workload: str
    clients: int
    train_rows: int
    device: str
    steady_s_per_round: float
    round_s: list[float]
    centralized_epoch_s: float
    ratio_vs_centralized: float
    final_acc: float


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, work: Callable[[], Any]) -> float:
    _synchronize(device)
    started = time.perf_counter()
    work()
    _synchronize(device)
    return time.perf_counter() - started


def centralized_epoch_s(simulation: Simulation, params: Params, repeats: int = 3) -> float:
    """Median time of one epoch of the spec's local training over all training rows, on the sim's device."""
    train = simulation.train
    assert isinstance(train, LocalData)
    device = simulation.device
    hp = simulation.plan.hp.model_copy(update={"local_epochs": 1})
    start = {name: t.to(device) for name, t in params.items()}
    warm_up = LocalData(train.x[: 10 * hp.batch_size], train.y[: 10 * hp.batch_size])
    simulation.plan.algorithm.local_update(hp, start, warm_up, 0)
    return statistics.median(
        _timed(device, lambda seed=seed: simulation.plan.algorithm.local_update(hp, start, train, seed))
        for seed in range(repeats)
    )


def _measure(label: str, simulation: Simulation, engine_name: str) -> GpuRecord:
    engine = make_engine(engine_name, simulation.setup, simulation.settings)
    try:
        result = simulation.run(engine)
    finally:
        engine.close()
    rounds = [r.wall_s for r in result.rounds]
    steady = statistics.median(rounds[1:] or rounds)
    epoch = centralized_epoch_s(simulation, result.params)
    return GpuRecord(
        label,
        simulation.settings.clients,
        sum(len(p) for p in simulation.parts),
        str(simulation.device),
        steady,
        rounds,
        epoch,
        steady / epoch,
        result.final_metrics["accuracy"],
    )


def digits_simulation(clients: int, rounds: int, device: str) -> Simulation:
    """The reference workload over ``clients`` clients on ``device``."""
    dataset, parts, initial = reference_workload(clients)
    project, settings = parse_spec(
        spec(rounds), {"clients": clients, "engine": "vectorized", "device": device}
    )
    return Simulation(project, settings, dataset=dataset, parts=parts, initial_params=initial)


def cnn_simulation(clients: int, samples_per_client: int, rounds: int, device: str) -> Simulation:
    """The CNN example over ``clients`` IID clients of ``samples_per_client`` training rows on ``device``."""
    test_fraction = 0.2
    train_rows = clients * samples_per_client
    samples = train_rows + max(1, round(train_rows * test_fraction / (1 - test_fraction)))
    project, settings = load_spec(
        CNN_SPEC,
        {
            "clients": clients,
            "samples": samples,
            "partition": "iid",
            "engine": "vectorized",
            "device": device,
            "test_fraction": test_fraction,
        },
    )
    return Simulation(project.model_copy(update={"rounds": rounds}), settings)


def run_gpu_bench(
    device: str,
    digits_clients: list[int],
    cnn_clients: list[int],
    samples_per_client: int,
    rounds: int,
    on_record: Callable[[GpuRecord], None] | None = None,
) -> dict[str, Any]:
    """Every configuration, one after the other; a JSON-ready report."""
    resolve_device(device)
    records = []
    plans: list[tuple[str, Callable[[], Simulation]]] = [
        (f"digits N={n}", lambda n=n: digits_simulation(n, rounds, device)) for n in digits_clients
    ] + [
        (f"cnn N={n}x{samples_per_client}", lambda n=n: cnn_simulation(n, samples_per_client, rounds, device))
        for n in cnn_clients
    ]
    for label, build in plans:
        record = _measure(label, build(), "vectorized")
        records.append(record)
        if on_record is not None:
            on_record(record)
    info = machine_info()
    if device.startswith("cuda"):
        info |= {
            "gpu": torch.cuda.get_device_name(),
            "cuda": torch.version.cuda,
            "tf32": torch.backends.cuda.matmul.allow_tf32,
        }
    return {
        "suite": "gpu",
        "device": device,
        "rounds": rounds,
        "machine": info,
        "records": [asdict(r) for r in records],
    }


def markdown(report: dict[str, Any], command: str) -> str:
    """The BENCHMARKS.md section body of a report."""
    m = report["machine"]
    where = m.get("gpu", m["cpu"])
    if "gpu" in m:
        where += f", CUDA {m['cuda']}, TF32 {'on' if m['tf32'] else 'off'}"
    lines = [
        f"Command: `{command}`",
        f"Device: {where}; {m['python']}, torch {m['torch']}; measured {m['date']}.",
        "",
        "Steady s/round = median of rounds 2..R of the vectorised engine (test evaluation included); centralized "
        "epoch = one epoch of the same local training (model, optimiser, batch size) over all the training rows "
        "on the same device, median of 3 after a warm-up; the ratio is the round over the epoch.",
        "",
        "| workload | training rows | steady s/round | centralized epoch s | ours / centralized | final acc |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["records"]:
        lines.append(
            f"| {r['workload']} | {r['train_rows']} | {r['steady_s_per_round']:.4f} "
            f"| {r['centralized_epoch_s']:.4f} | {r['ratio_vs_centralized']:.2f}x | {r['final_acc']:.4f} |"
        )
    return "\n".join(lines)
