"""Partition options: every sample exactly once, clear errors for impossible settings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.fl.core import FLError
from consortium.sim.partition import partition


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 9), min_size=20, max_size=400),
    clients=st.integers(1, 10),
    kind=st.sampled_from(["iid", "dirichlet:0.1", "dirichlet:5", "shards:1", "shards:2"]),
    seed=st.integers(0, 2**32),
)
def test_every_sample_lands_on_exactly_one_client(
    labels: list[int], clients: int, kind: str, seed: int
) -> None:
    y = np.array(labels)
    parts = partition(kind, y, len(y), clients, seed)
    assert len(parts) == clients
    assert all(len(p) >= 1 for p in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(y)))


def test_shards_give_clients_few_labels() -> None:
    y = np.repeat(np.arange(10), 100)
    parts = partition("shards:2", y, len(y), 50, seed=0)
    assert max(len(np.unique(y[p])) for p in parts) <= 2


@pytest.mark.parametrize(
    ("kind", "clients", "message"),
    [
        ("dirichlet:0", 5, "alpha must be a finite number > 0"),
        ("dirichlet:-1", 5, "alpha must be a finite number > 0"),
        ("dirichlet:abc", 5, "'abc' is not a valid float"),
        ("shards:2", 60, "120 shards exceed the 100 samples"),
        ("shards:0", 5, "shards per client must be >= 1"),
        ("iid", 101, "exceeds the number of samples"),
        ("zipf:2", 5, "unknown partition 'zipf:2'"),
    ],
)
def test_impossible_partitions_fail_with_the_reason(kind: str, clients: int, message: str) -> None:
    y = np.repeat(np.arange(10), 10)
    with pytest.raises(FLError, match=message):
        partition(kind, y, len(y), clients, seed=0)


def test_label_partitions_need_labels() -> None:
    with pytest.raises(FLError, match="has no labels; use iid"):
        partition("dirichlet:0.5", None, 100, 5, seed=0)
