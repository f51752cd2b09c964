"""The vectorised engine: the cohort's local training as one batched computation per chunk of clients.

The algorithm's ``local_update_cohort`` trains a chunk of clients at once (stacked params, vmapped steps).
Linear strategies (FedAvg, k-means merge) reduce each chunk to partial sums as it finishes, so memory stays
bounded by the chunk; other strategies see the whole cohort's stacked updates in canonical client order.
With SCAFFOLD the engine keeps every client's control variate stacked ``[N, ...]`` and gathers the chunk's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from consortium.fl.capabilities import CohortTrainer, SummedCohortTrainer
from consortium.fl import scaffold
from consortium.fl.cohort import Cohort
from consortium.fl.core import FLError, Params
from consortium.fl.privacy.spec import DpPlan
from consortium.plan import RoundAggregate
from consortium.sim.engines.base import Setup, check_control_given
from consortium.sim.engines.memory import reuse_freed_memory
from consortium.sim.engines.reducer import CohortReducer

DEFAULT_CHUNK_BYTES = {"cpu": 64 * 2**20, "cuda": 4 * 2**30}
"""Budget for the chunk's stacked params and optimiser state, per device type."""

_COPIES_PER_CLIENT = 5
"""Stacked params, gradients, up to two optimiser buffers and one gathered copy."""

_SCAFFOLD_COPIES_PER_CLIENT = 3
"""SCAFFOLD's extra: the gathered c_i, the correction c - c_i and delta_c."""


def supports_vectorized(algorithm: Any) -> bool:
    return isinstance(algorithm, CohortTrainer)


def default_chunk_clients(params: Params, device: torch.device, scaffold_on: bool = False) -> int:
    copies = _COPIES_PER_CLIENT + (_SCAFFOLD_COPIES_PER_CLIENT if scaffold_on else 0)
    per_client = sum(t.numel() * t.element_size() for t in params.values()) * copies
    return max(1, DEFAULT_CHUNK_BYTES[device.type] // max(per_client, 1))


class ClientControls:
    """Every client's SCAFFOLD control variate ``c_i``, stacked ``[N, *shape]``, rows addressed by client id.

    All start at zero; :meth:`advance` adds the ``delta_c`` a chunk of clients sent
    (``c_i+ = c_i + delta_c``).
    """

    def __init__(self, client_ids: tuple[str, ...], params: Params) -> None:
        if not client_ids:
            raise FLError("SCAFFOLD in the vectorised engine needs the run's client ids (Setup.client_ids)")
        self._row = {cid: i for i, cid in enumerate(client_ids)}
        self.stacked = {
            name: torch.zeros((len(client_ids), *t.shape), dtype=t.dtype, device=t.device)
            for name, t in scaffold.zero_control(params).items()
        }

    def rows(self, client_ids: tuple[str, ...], device: torch.device) -> torch.Tensor:
        unknown = [cid for cid in client_ids if cid not in self._row]
        if unknown:
            raise FLError(f"clients {unknown[:5]} are not among the run's clients")
        return torch.as_tensor([self._row[cid] for cid in client_ids], device=device)

    def gather(self, rows: torch.Tensor) -> Params:
        return {name: t.index_select(0, rows) for name, t in self.stacked.items()}

    def advance(self, rows: torch.Tensor, deltas: Params) -> None:
        for name, t in self.stacked.items():
            t.index_add_(0, rows, deltas[name])


def chunks(cohort: Cohort, size: int) -> Iterator[Cohort]:
    """Consecutive sub-cohorts of at most ``size`` clients (a cohort ordered largest first stays so)."""
    for start in range(0, len(cohort), size):
        yield cohort.select(np.arange(start, min(start + size, len(cohort))))


def fit_chunk(
    algorithm: Any, hp: Any, params: Params, train: Any, chunk: Cohort, reducer: CohortReducer,
    privacy: DpPlan | None = None,
) -> tuple[dict[str, float], float]:
    """Train one chunk of clients and fold it into ``reducer``; the chunk's example-weighted metric sums and,
    with DP, its clients' summed clipped-count report (:meth:`DpPlan.unclipped_report`, 0 without DP).

    When the reducer only needs example-weighted sums of the clients' params (FedAvg, nothing tampering with
    updates, no DP) and the algorithm can produce them directly, the clients' params are never materialised.
    With DP every client's delta is clipped (and, with local noise, noised from its own seed, as the loop
    engine's clients do) inside the batch, and each client weighs 1.
    """
    num_examples = torch.as_tensor(chunk.sizes, device=train.x.device)
    report = 0.0
    if privacy is None and reducer.takes_weighted_sums and isinstance(algorithm, SummedCohortTrainer):
        sums, per_client = algorithm.local_update_cohort_summed(hp, params, train, chunk)
        reducer.add_weighted_sums(sums, num_examples)
    else:
        stacked, per_client = algorithm.local_update_cohort(hp, params, train, chunk)
        weights = num_examples
        if privacy is not None:
            seeds = [privacy.client_seed(seed, cid) for seed, cid in zip(chunk.seeds, chunk.client_ids)]
            stacked, report = privacy.privatise_stacked(params, stacked, seeds)
            weights = torch.full_like(num_examples, privacy.weight)
        reducer.add(stacked, weights, chunk.client_ids)
    return weighted_metric_sums(per_client, num_examples), report


def weighted_metric_sums(per_client: dict[str, torch.Tensor], num_examples: torch.Tensor) -> dict[str, float]:
    """``sum_c n_c * metric_c`` of each per-client metric."""
    weights = num_examples.to(torch.float64)
    return {name: float((values.to(torch.float64) * weights).sum()) for name, values in per_client.items()}


class VectorizedEngine:
    name = "vectorized"

    def __init__(self, setup: Setup, chunk_clients: int | None = None) -> None:
        if not supports_vectorized(setup.plan.algorithm):
            raise FLError(
                f"the {setup.plan.algorithm.name!r} algorithm has no batched local update; "
                "run it with --engine loop (or ray)"
            )
        if setup.plan.sample_level:
            raise FLError("privacy.mechanism: the vectorised engine does not run DP-SGD (Opacus trains one "
                          "client at a time); use --engine loop")
        self.setup = setup
        self.chunk_clients = chunk_clients
        self.client_controls: ClientControls | None = None
        if setup.device.type == "cpu":
            reuse_freed_memory()

    def fit(self, params: Params, cohort: Cohort, control: Params | None = None,
            clip: float | None = None) -> RoundAggregate:
        setup, privacy = self.setup, self.setup.plan.at_clip(clip).privacy
        check_control_given(setup, control)
        size = self.chunk_clients or default_chunk_clients(params, setup.device, control is not None)
        reducer = CohortReducer(setup.plan.strategy, params, setup.tamper)
        metric_sums: dict[str, float] = {}
        total = 0
        deltas_sum: Params | None = None
        report = 0.0
        for chunk in chunks(cohort, size):
            if control is None:
                chunk_metrics, chunk_report = fit_chunk(
                    setup.plan.algorithm, setup.plan.hp, params, setup.train, chunk, reducer, privacy
                )
                report += chunk_report
            else:
                stacked, per_client, chunk_sum = self._controlled_update(params, chunk, control)
                deltas_sum = scaffold.merge_sums(deltas_sum, chunk_sum)
                num_examples = torch.as_tensor(chunk.sizes, device=setup.device)
                reducer.add(stacked, num_examples, chunk.client_ids)
                chunk_metrics = weighted_metric_sums(per_client, num_examples)
            for name, value in chunk_metrics.items():
                metric_sums[name] = metric_sums.get(name, 0.0) + value
            total += int(chunk.sizes.sum())
        train = {name: value / total for name, value in metric_sums.items()} if total else {}
        return RoundAggregate(reducer.result(), train, total, deltas_sum, report)

    def _controlled_update(
        self, params: Params, chunk: Cohort, control: Params
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Params]:
        """A chunk's SCAFFOLD local work: its stacked params and metrics, and the sum of its ``delta_c``;
        the chunk's ``c_i`` advance."""
        setup = self.setup
        if self.client_controls is None:
            self.client_controls = ClientControls(setup.client_ids, params)
        rows = self.client_controls.rows(chunk.client_ids, setup.device)
        controls = scaffold.Controls(control, self.client_controls.gather(rows))
        stacked, per_client = setup.plan.algorithm.local_update_cohort(
            setup.plan.hp, params, setup.train, chunk, controls
        )
        stacked, deltas = scaffold.split_deltas(stacked)
        self.client_controls.advance(rows, deltas)
        return stacked, per_client, scaffold.stacked_delta_sum(deltas)

    def close(self) -> None:
        pass
