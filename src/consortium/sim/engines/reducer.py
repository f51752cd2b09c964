"""Folding a cohort's stacked updates into the strategy's aggregate, chunk by chunk or shard by shard."""

from __future__ import annotations

import torch

from consortium.fl.capabilities import aggregate_stacked
from consortium.fl.core import (
    FLError,
    LinearStrategy,
    Params,
    StackedUpdates,
    Strategy,
    WeightedSumsStrategy,
    merge_partials,
)
from consortium.sim.engines.base import Tamper


class CohortReducer:
    """Folds stacked client updates into the strategy's aggregate, chunk by chunk.

    Linear strategies keep running partial sums; any other strategy gets all updates at the end, in canonical
    (client id) order (after the tamper hook, if any), stacked or, for a strategy that is no
    :class:`~consortium.fl.capabilities.StackedAggregator`, as per-client updates.
    """

    def __init__(self, strategy: Strategy, params: Params, tamper: Tamper | None = None) -> None:
        self.strategy, self.params, self.tamper = strategy, params, tamper
        self.linear = isinstance(strategy, LinearStrategy) and strategy.linear and tamper is None
        self.takes_weighted_sums = self.linear and isinstance(strategy, WeightedSumsStrategy)
        """True when the strategy's partial is the example-weighted sum of the updates (FedAvg)."""
        self.partial: Params | None = None
        self.pieces: list[tuple[dict[str, torch.Tensor], torch.Tensor, tuple[str, ...]]] = []

    def add(self, stacked: dict[str, torch.Tensor], num_examples: torch.Tensor, ids: tuple[str, ...]) -> None:
        if self.linear:
            partial = self.strategy.partial(StackedUpdates(stacked, num_examples.to(torch.float64), ids))
            self.partial = partial if self.partial is None else merge_partials(self.partial, partial)
        else:
            self.pieces.append((stacked, num_examples, ids))

    def add_weighted_sums(self, sums: Params, num_examples: torch.Tensor) -> None:
        """Fold in ``sum_i n_i t_i`` of some clients (see :attr:`takes_weighted_sums`)."""
        self.add_partial(self.strategy.partial_of_weighted_sums(sums, num_examples.to(torch.float64).sum()))

    def add_partial(self, partial: Params) -> None:
        """Fold in partial sums computed elsewhere (a Ray actor's shard)."""
        self.partial = partial if self.partial is None else merge_partials(self.partial, partial)

    def result(self) -> Params:
        if self.linear:
            if self.partial is None:
                raise FLError("no client updates to aggregate")
            return self.strategy.finish(self.params, self.partial)
        names = list(self.pieces[0][0])
        stacked = {name: torch.cat([p[0][name] for p in self.pieces]) for name in names}
        num_examples = torch.cat([p[1] for p in self.pieces])
        ids = tuple(cid for p in self.pieces for cid in p[2])
        order = sorted(range(len(ids)), key=ids.__getitem__)
        index = torch.as_tensor(order, device=num_examples.device)
        stacked = {name: t.index_select(0, index) for name, t in stacked.items()}
        num_examples, ids = num_examples.index_select(0, index), tuple(ids[i] for i in order)
        updates = StackedUpdates(stacked, num_examples.to(torch.float64), ids)
        if self.tamper is not None:
            updates = self.tamper(self.params, updates)
        return aggregate_stacked(self.strategy, self.params, updates)
