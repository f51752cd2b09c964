"""The Ray engine: the cohort sharded over Ray actors, each reducing its shard, one reduce per round.

Each actor holds one copy of the algorithm and of the training rows (sent once, as safetensors bytes) and
trains its shard of the cohort, batched when the algorithm supports it and client after client otherwise.
For a linear strategy (FedAvg, k-means merge) an actor returns only its shard's partial sums; for any other
strategy it returns its clients' stacked updates. Tensors cross process boundaries as safetensors bytes.
With DP each actor clips (and, with local noise, noises from each client's own seed) its clients' deltas as
the vectorised engine does, each weighing 1, and returns its clients' clipped-count report; the central
noise and the adaptive clip step stay with the round loop.
Ray is an optional extra: ``pip install 'consortium[ray]'``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from consortium.config import torch_threads
from consortium.fl.cohort import Cohort
from consortium.fl.core import FLError, LocalData, Params
from consortium.plan import RoundAggregate, RunPlan
from consortium.codec import decode_tensors, encode_tensors
from consortium.protocol import ProjectCreate
from consortium.sim.engines.base import Setup, client_data
from consortium.sim.spec import SimulationSettings
from consortium.sim.engines.memory import reuse_freed_memory
from consortium.sim.engines.reducer import CohortReducer
from consortium.sim.engines.vectorized import fit_chunk, supports_vectorized

_NUM_EXAMPLES = "__num_examples__"


class ShardWorker:
    """What runs inside one Ray actor: local training and reduction of one shard of each round's cohort."""

    def __init__(self, spec: dict[str, Any], train_bytes: bytes, device: str, threads: int,
                 sampling: tuple[float, int]) -> None:
        """``spec``: the project spec as JSON, resolved here into the same :class:`RunPlan` as the
        simulation's (its privacy accounted at the cohort's ``sampling``)."""
        torch.set_num_threads(threads)
        self.plan = plan = RunPlan.of(ProjectCreate.model_validate(spec), sampling=sampling)
        self.algorithm, self.hp, self.strategy = plan.algorithm, plan.hp, plan.strategy
        tensors = decode_tensors(train_bytes)
        self.device = torch.device(device)
        self.train = LocalData(
            tensors["x"].to(self.device), tensors["y"].to(self.device) if "y" in tensors else None
        )
        self.vectorized = supports_vectorized(self.algorithm)
        if self.device.type == "cpu":
            reuse_freed_memory()

    def fit(
        self, params_bytes: bytes, ids: list[str], offsets: np.ndarray, rows: np.ndarray, seeds: list[int],
        clip: float | None = None,
    ) -> tuple[bytes, list[str], dict[str, float], int, float]:
        """Train the shard (with DP: clipped at ``clip``, the round's norm under adaptive clipping); return
        (tensors as safetensors, their client ids, metric sums, examples, clipped-count report)."""
        params = {k: v.to(self.device) for k, v in decode_tensors(params_bytes).items()}
        cohort = Cohort(tuple(ids), offsets, rows, tuple(seeds))
        reducer = CohortReducer(self.strategy, params)
        privacy = self.plan.at_clip(clip).privacy
        metric_sums: dict[str, float] = {}
        report = 0.0
        if self.vectorized and reducer.linear:
            metric_sums, report = fit_chunk(self.algorithm, self.hp, params, self.train, cohort, reducer, privacy)
            return encode_tensors(reducer.partial), [], metric_sums, int(cohort.sizes.sum()), report
        if self.vectorized:
            stacked, per_client = self.algorithm.local_update_cohort(self.hp, params, self.train, cohort)
            num_examples = torch.as_tensor(cohort.sizes, device=self.device)
            metric_sums = {
                k: float((v.to(torch.float64) * num_examples).sum()) for k, v in per_client.items()
            }
        else:
            updates = [
                self.algorithm.local_update(
                    self.hp, params, client_data(self.train, cohort, c), cohort.seeds[c]
                )
                for c in range(len(cohort))
            ]
            stacked = {name: torch.stack([u.tensors[name] for u in updates]) for name in updates[0].tensors}
            num_examples = torch.as_tensor([u.num_examples for u in updates], device=self.device)
            for u in updates:
                for k, v in u.metrics.items():
                    metric_sums[k] = metric_sums.get(k, 0.0) + v * u.num_examples
        total = int(cohort.sizes.sum())
        weights = num_examples
        if privacy is not None:
            client_seeds = [privacy.client_seed(seed, cid) for seed, cid in zip(cohort.seeds, cohort.client_ids)]
            stacked, report = privacy.privatise_stacked(params, stacked, client_seeds)
            weights = torch.full_like(num_examples, privacy.weight)
        if reducer.linear:
            reducer.add(stacked, weights, cohort.client_ids)
            return encode_tensors(reducer.partial), [], metric_sums, total, report
        return (
            encode_tensors(stacked | {_NUM_EXAMPLES: weights}),
            list(cohort.client_ids),
            metric_sums,
            total,
            report,
        )


def _require_ray():
    try:
        import ray
    except ImportError:
        raise FLError("the ray engine needs Ray: pip install 'consortium[ray]'") from None
    return ray


class RayEngine:
    name = "ray"

    def __init__(self, setup: Setup, settings: SimulationSettings) -> None:
        if setup.tamper is not None:
            raise FLError("the ray engine does not run attacks; use --engine vectorized or loop")
        if setup.plan.sample_level:
            raise FLError("the ray engine does not run DP-SGD; use --engine loop")
        ray = self._ray = _require_ray()
        self.setup = setup
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            if settings.ray_address:
                ray.init(address=settings.ray_address, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=max(os.cpu_count() or 1, settings.ray_actors),
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
        train = {"x": setup.train.x.cpu()} | ({} if setup.train.y is None else {"y": setup.train.y.cpu()})
        train_ref = ray.put(encode_tensors(train))
        worker = ray.remote(num_cpus=1, num_gpus=1 if setup.device.type == "cuda" else 0)(ShardWorker)
        threads = torch_threads()
        self.actors = [
            worker.remote(setup.plan.spec.model_dump(mode="json"), train_ref, setup.device.type, threads,
                          settings.sampling())
            for _ in range(settings.ray_actors)
        ]

    def fit(self, params: Params, cohort: Cohort, control: Params | None = None,
            clip: float | None = None) -> RoundAggregate:
        if control is not None:
            raise FLError("the ray engine does not run SCAFFOLD yet; use --engine vectorized or loop")
        ray = self._ray
        params_ref = ray.put(encode_tensors(params))
        shards = np.array_split(np.arange(len(cohort)), len(self.actors))
        futures = []
        for actor, positions in zip(self.actors, shards, strict=True):
            if len(positions) == 0:
                continue
            shard = cohort.select(positions)
            futures.append(
                actor.fit.remote(
                    params_ref, list(shard.client_ids), shard.offsets, shard.rows, list(shard.seeds), clip
                )
            )
        reducer = CohortReducer(self.setup.plan.strategy, params)
        metric_sums: dict[str, float] = {}
        total, report = 0, 0.0
        for tensor_bytes, ids, sums, examples, shard_report in ray.get(futures):
            tensors = {k: v.to(self.setup.device) for k, v in decode_tensors(tensor_bytes).items()}
            if reducer.linear:
                reducer.add_partial(tensors)
            else:
                num_examples = tensors.pop(_NUM_EXAMPLES)
                reducer.add(tensors, num_examples, tuple(ids))
            for k, v in sums.items():
                metric_sums[k] = metric_sums.get(k, 0.0) + v
            total += examples
            report += shard_report
        train = {k: v / total for k, v in metric_sums.items()} if total else {}
        return RoundAggregate(reducer.result(), train, total, unclipped_report=report)

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []
        if self.started_ray:
            self._ray.shutdown()
