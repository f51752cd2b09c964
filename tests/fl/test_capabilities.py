"""Capabilities as protocols: a strategy without ``aggregate_stacked`` still aggregates stacked updates,
through its ``aggregate`` with one update per client in canonical order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from consortium.fl.capabilities import StackedAggregator, aggregate_stacked
from consortium.fl.core import Params, Strategy, Update, stack_updates
from consortium.fl.registry import get_strategy
from consortium.fl.robust import Bulyan, CenteredClipping, Krum, Median, MultiKrum, TrimmedMean
from consortium.fl.strategies import FedAvg, KMeansMerge


class FirstClient:
    """A plugin strategy with ``aggregate`` only: the next params are the first client's tensors."""

    name: ClassVar[str] = "first-client"
    linear: ClassVar[bool] = False

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def check_cohort(self, num_clients: int) -> None:
        pass

    def aggregate(self, params: Params, updates: Sequence[Update]) -> Params:
        self.seen = [(u.client_id, u.num_examples) for u in updates]
        return dict(updates[0].tensors)


def updates() -> list[Update]:
    return [Update({"w": torch.full((2,), float(i))}, 10 + i, client_id=f"c{i}") for i in (2, 0, 1)]


def test_every_builtin_strategy_takes_stacked_updates() -> None:
    for cls in (FedAvg, KMeansMerge, Median, TrimmedMean, Krum, MultiKrum, Bulyan, CenteredClipping):
        assert issubclass(cls, StackedAggregator), cls.name
    assert isinstance(get_strategy("krum", f=1), StackedAggregator)


def test_a_strategy_with_aggregate_only_gets_per_client_updates_in_canonical_order() -> None:
    strategy = FirstClient()
    assert isinstance(strategy, Strategy) and not isinstance(strategy, StackedAggregator)
    got = aggregate_stacked(strategy, {"w": torch.zeros(2)}, stack_updates(updates()))
    assert strategy.seen == [("c0", 10), ("c1", 11), ("c2", 12)]
    assert torch.equal(got["w"], torch.zeros(2))


def test_a_stacked_aggregator_gets_the_stack_itself() -> None:
    fedavg = get_strategy("fedavg")
    stacked = stack_updates(updates())
    params = {"w": torch.zeros(2)}
    expected = fedavg.aggregate(params, updates())["w"]
    assert torch.equal(aggregate_stacked(fedavg, params, stacked)["w"], expected)
