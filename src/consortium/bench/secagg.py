"""`consortium bench secagg`: what secure aggregation costs a round, against the plain round it replaces.

The workload: n clients (20) of the digits classifier widened to about 100k parameters (MLP 64-512-128-10,
100,234 parameters); each client's update is a real local update from the same initial params on its IID
share of digits (computed once, not timed). Three ways to run the round's aggregation, each timed per party:

- **plain**: every client encodes its update as the safetensors upload of the hub (``codec.encode_update``);
  the hub decodes the n uploads, checks each against the update template and takes the example-weighted
  FedAvg mean (``fl.strategies.FedAvg``): the hub's whole aggregation work for a plain round;
- **secagg**: every client flattens and quantises its delta (``Quantiser.for_inputs``, clip range R), then
  the four SecAgg+ stages run with every message serialised by its sender (``to_wire``: JSON, and the
  masked vector as a binary frame of raw little-endian words) and parsed by its receiver
  (``parse_client_message`` on the hub; the hub's replies are parsed by the clients); the hub unmasks the
  uint32 sum and dequantises it into the mean delta (an unweighted mean: under SecAgg the hub sees only sums);
- **secagg, d dropped**: the same with d clients dropped after sharing keys (before the masked input), the
  costliest place: the hub rebuilds their mask keys from shares and removes their pair masks.

Reported per configuration (median of ``repeats``): the hub's time, the median client's time, and the round's
critical path = the hub's time plus, for each stage, the slowest client (clients run in parallel in a real
round). Everything runs in one process on one torch thread; local training is not part of any figure.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from consortium.codec import decode_update, encode_update
from consortium.fl.core import LocalData, Params, Update, check_update, parse_hyperparams, spec_of
from consortium.fl.privacy.secagg.client import SecAggClient
from consortium.fl.privacy.secagg.local import run_round
from consortium.fl.privacy.secagg.messages import (
    KeyDirectory,
    SecAggConfig,
    ShareInbox,
    UnmaskRequest,
    parse_client_message,
    to_wire,
)
from consortium.fl.privacy.secagg.quantise import Quantiser, flatten, unflatten
from consortium.fl.privacy.secagg.server import SecAggServer
from consortium.fl.strategies import FedAvg
from consortium.protocol import UpdateMeta

LAYERS = [64, 512, 128, 10]
STAGE_NAMES = ("encode", "advertise_keys", "share_keys", "masked_input", "unmask")


@dataclass
class Timings:
    """Seconds spent by the hub and by each client in each stage of one round."""

    hub: float = 0.0
    clients: dict[str, dict[str, float]] = field(default_factory=dict)

    def client(self, stage: str, client_id: str, seconds: float) -> None:
        per_stage = self.clients.setdefault(stage, {})
        per_stage[client_id] = per_stage.get(client_id, 0.0) + seconds

    def summary(self) -> dict[str, float]:
        per_client: dict[str, float] = {}
        for per_stage in self.clients.values():
            for cid, seconds in per_stage.items():
                per_client[cid] = per_client.get(cid, 0.0) + seconds
        slowest = sum(max(per_stage.values()) for per_stage in self.clients.values())
        return {"hub_s": self.hub, "client_median_s": statistics.median(per_client.values()),
                "critical_path_s": self.hub + slowest}


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


@dataclass(frozen=True)
class Workload:
    params: Params
    updates: list[Update]
    """Each client's local params after its local update (the tensors a plain round uploads)."""

    @property
    def num_params(self) -> int:
        return sum(t.numel() for t in self.params.values())


def make_workload(clients: int, seed: int = 0) -> Workload:
    """n real local updates of the ~100k-parameter digits MLP, from the same initial params."""
    from consortium.fl.data import iid_partition
    from consortium.fl.registry import get_algorithm
    from consortium.sim.datasets import load_dataset

    algorithm = get_algorithm("classifier")
    hp = parse_hyperparams(algorithm, {"layers": LAYERS, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                                       "local_epochs": 1, "batch_size": 32})
    train = load_dataset("digits").train
    params = algorithm.init(hp, train.x.shape[1], seed)
    updates = []
    for i, rows in enumerate(iid_partition(len(train), clients, seed)):
        index = torch.from_numpy(rows)
        update = algorithm.local_update(hp, params, LocalData(train.x[index], train.y[index]), seed + i)
        updates.append(Update(update.tensors, update.num_examples, update.metrics, f"client-{i:02d}"))
    return Workload(params, updates)


def plain_round(work: Workload) -> Timings:
    """Clients encode their uploads; the hub decodes, checks and averages them."""
    timings = Timings()
    uploads = []
    for update in work.updates:
        meta = UpdateMeta(num_examples=update.num_examples, metrics={}, compute_s=0.0)
        payload, seconds = _timed(lambda u=update, m=meta: encode_update(u.tensors, m))
        timings.client("encode", update.client_id, seconds)
        uploads.append((update.client_id, payload))
    started = time.perf_counter()
    template = spec_of(work.params)
    received = []
    for client_id, payload in uploads:
        tensors, meta = decode_update(payload)
        check_update(template, tensors)
        received.append(Update(tensors, meta.num_examples, {}, client_id))
    FedAvg().aggregate(work.params, received)
    timings.hub = time.perf_counter() - started
    return timings


def secagg_round(work: Workload, threshold: int, clip_range: float, dropped: int = 0,
                 round_id: int = 1) -> tuple[Timings, Params]:
    """One SecAgg round over the workload's deltas; the last ``dropped`` clients vanish before stage 3.

    Returns the timings and the mean delta the hub recovers."""
    ids = [u.client_id for u in work.updates]
    quantiser = Quantiser.for_inputs(clip_range, len(ids))
    config = SecAggConfig(round=round_id, clients=ids, threshold=threshold, vector_length=work.num_params)
    timings = Timings()
    clients = {cid: SecAggClient(config, cid, os.urandom) for cid in ids}
    vectors = {}
    for update in work.updates:
        def encode(u: Update = update) -> np.ndarray:
            return quantiser.quantise(flatten({k: u.tensors[k] - work.params[k] for k in work.params}))
        vectors[update.client_id], seconds = _timed(encode)
        timings.client("encode", update.client_id, seconds)
    server, _ = _timed(lambda: SecAggServer(config))

    def client_stage(stage: str, active: list[str], produce: Callable[[str], Any]) -> None:
        for cid in active:
            raw, seconds = _timed(lambda c=cid: to_wire(produce(c)))
            timings.client(stage, cid, seconds)
            _, hub_s = _timed(lambda r=raw: server.receive(parse_client_message(r)))
            timings.hub += hub_s

    def hub(call: Callable[[], Any]) -> Any:
        result, seconds = _timed(call)
        timings.hub += seconds
        return result

    client_stage("advertise_keys", ids, lambda c: clients[c].advertise())
    directory = hub(lambda: server.close_advertise().model_dump_json())
    client_stage("share_keys", ids, lambda c: clients[c].share_keys(KeyDirectory.model_validate_json(directory)))
    inboxes = hub(lambda: {c: box.model_dump_json() for c, box in server.close_share_keys().items()})
    staying = ids[: len(ids) - dropped]
    client_stage("masked_input", staying, lambda c: clients[c].masked_input(
        ShareInbox.model_validate_json(inboxes[c]), vectors[c]))
    request = hub(lambda: server.close_masked_input().model_dump_json())
    client_stage("unmask", staying, lambda c: clients[c].unmask(UnmaskRequest.model_validate_json(request)))

    def finish() -> Params:
        total = server.close_unmask()
        mean = quantiser.dequantise_sum(total, len(server.survivors)) / len(server.survivors)
        return unflatten(mean, work.params)

    return timings, hub(finish)


def correctness_sample(rounds: int, clients: int = 20, threshold: int = 14, length: int = 1000,
                       seed: int = 0) -> dict[str, Any]:
    """``rounds`` random rounds: the unmasked sum equals the plain sum of the quantised inputs exactly."""
    rng = np.random.default_rng(seed)
    quantiser = Quantiser.for_inputs(1.0, clients)
    ids = [f"client-{i:02d}" for i in range(clients)]
    exact = 0
    started = time.perf_counter()
    for number in range(rounds):
        inputs = {c: quantiser.quantise(torch.from_numpy(rng.uniform(-1.2, 1.2, length))) for c in ids}
        config = SecAggConfig(round=number, clients=ids, threshold=threshold, vector_length=length)
        outcome = run_round(config, inputs)
        expected = (sum(inputs[c].astype(np.uint64) for c in outcome.included) % 2**32).astype(np.uint32)
        exact += int(np.array_equal(outcome.total, expected))
    return {"rounds": rounds, "exact": exact, "clients": clients, "threshold": threshold, "length": length,
            "seconds": time.perf_counter() - started}


def run_secagg_bench(clients: int = 20, threshold: int = 14, dropouts: tuple[int, ...] = (3, 6),
                     repeats: int = 3, rounds: int = 0) -> dict[str, Any]:
    """Median timings of each configuration over ``repeats`` interleaved repetitions, and the other load."""
    from consortium.bench.proctree import machine_busy_s

    torch.set_num_threads(1)
    work = make_workload(clients)
    deltas = [flatten({k: u.tensors[k] - work.params[k] for k in work.params}) for u in work.updates]
    clip_range = float(max(d.abs().max() for d in deltas)) * 1.01
    plain_mean = sum(deltas) / len(deltas)
    configs = ["plain", "secagg"] + [f"secagg d={d}" for d in dropouts]
    samples: dict[str, list[dict[str, float]]] = {c: [] for c in configs}
    max_error = 0.0
    busy_before, own_before, started = machine_busy_s(), time.process_time(), time.perf_counter()
    for repeat in range(repeats):
        samples["plain"].append(plain_round(work).summary())
        timings, mean = secagg_round(work, threshold, clip_range, round_id=repeat)
        samples["secagg"].append(timings.summary())
        max_error = max(max_error, float((flatten(mean) - plain_mean).abs().max()))
        for d in dropouts:
            samples[f"secagg d={d}"].append(secagg_round(work, threshold, clip_range, d, repeat)[0].summary())
    wall = time.perf_counter() - started
    other = max(machine_busy_s() - busy_before - (time.process_time() - own_before), 0.0) / wall
    medians = {c: {k: statistics.median(s[k] for s in runs) for k in runs[0]} for c, runs in samples.items()}
    result: dict[str, Any] = {
        "clients": clients, "threshold": threshold, "num_params": work.num_params, "repeats": repeats,
        "clip_range": clip_range, "bits": Quantiser.for_inputs(clip_range, clients).bits,
        "max_abs_error_vs_plain_mean": max_error, "other_avg_cores": other, "configs": medians,
    }
    if rounds:
        result["correctness"] = correctness_sample(rounds, clients, threshold)
    return result


def report_markdown(result: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    """The BENCHMARKS.md section."""
    configs = result["configs"]
    plain = configs["plain"]
    lines = [
        f"Measured by `{command}` on {machine['cpu']}, {machine['cores']} cores, {machine['python']}, torch "
        f"{machine['torch']} (1 thread), {machine['date']}; other load while it ran: "
        f"{result['other_avg_cores']:.2f} cores (a shared machine).",
        "",
        f"n = {result['clients']} clients, t = {result['threshold']}, a {result['num_params']:,}-parameter "
        f"update (digits MLP {'-'.join(map(str, LAYERS))}, each client's real local update), "
        f"{result['bits']}-bit quantisation in [-{result['clip_range']:.3g}, {result['clip_range']:.3g}]; "
        f"medians of {result['repeats']}. *Plain*: clients encode safetensors uploads, the hub decodes, checks "
        "and FedAvg-averages them. *SecAgg*: quantise, the four stages with every message as JSON but the masked "
        "vectors (binary frames of raw little-endian uint32 words), unmask, "
        "dequantise. *d dropped*: d clients vanish after sharing keys. Critical path = hub + the slowest "
        "client of each stage (clients run in parallel); local training excluded. "
        f"Largest error of the SecAgg mean against the plain mean: {result['max_abs_error_vs_plain_mean']:.2e}.",
        "",
        "| round | hub (s) | median client (s) | critical path (s) | critical path / plain |",
        "|---|---|---|---|---|",
    ]
    for name, m in configs.items():
        lines.append(f"| {name} | {m['hub_s']:.4f} | {m['client_median_s']:.4f} | {m['critical_path_s']:.4f} "
                     f"| {m['critical_path_s'] / plain['critical_path_s']:.1f}x |")
    if "correctness" in result:
        c = result["correctness"]
        lines += ["", f"Correctness sample: {c['exact']} of {c['rounds']} random rounds (n = {c['clients']}, "
                      f"t = {c['threshold']}, {c['length']} values) unmasked to exactly the plain sum of the "
                      f"quantised inputs ({c['seconds']:.0f} s)."]
    return "\n".join(lines)

