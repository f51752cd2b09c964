"""Seeded partitions: every sample exactly once, deterministic, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.fl.data import dirichlet_label_partition, iid_partition, train_validation_split

PROPERTY = settings(max_examples=80, deadline=None)
seeds = st.integers(0, 2**63 - 1)


def assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0), "each part is sorted without duplicates"
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))


@PROPERTY
@given(
    labels=st.lists(st.integers(0, 6), min_size=1, max_size=300),
    clients=st.integers(1, 12),
    alpha=st.floats(0.01, 100.0),
    seed=seeds,
)
def test_dirichlet_partition_covers_every_sample_once(
    labels: list[int], clients: int, alpha: float, seed: int
) -> None:
    labels_array = np.array(labels)
    clients = min(clients, len(labels))
    parts = dirichlet_label_partition(labels_array, clients, alpha, seed)
    assert len(parts) == clients
    assert all(len(p) >= 1 for p in parts)
    assert_exact_cover(parts, len(labels))
    again = dirichlet_label_partition(labels_array, clients, alpha, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_dirichlet_alpha_controls_label_skew() -> None:
    labels = np.repeat(np.arange(10), 200)

    def mean_classes_per_client(alpha: float) -> float:
        parts = dirichlet_label_partition(labels, 5, alpha, seed=0)
        return float(np.mean([np.sum(np.bincount(labels[p], minlength=10) >= 10) for p in parts]))

    assert mean_classes_per_client(1000.0) == 10
    assert mean_classes_per_client(0.05) < 5


def test_dirichlet_partition_depends_on_seed() -> None:
    labels = np.repeat(np.arange(4), 50)
    a = dirichlet_label_partition(labels, 3, 0.5, seed=1)
    b = dirichlet_label_partition(labels, 3, 0.5, seed=2)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_dirichlet_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        dirichlet_label_partition(np.zeros(10), 2, alpha, seed=0)


def test_dirichlet_rejects_bad_client_counts() -> None:
    with pytest.raises(ValueError, match="num_clients must be >= 1"):
        dirichlet_label_partition(np.zeros(10), 0, 1.0, seed=0)
    with pytest.raises(ValueError, match=r"num_clients \(11\) exceeds the number of samples \(10\)"):
        dirichlet_label_partition(np.zeros(10), 11, 1.0, seed=0)


@PROPERTY
@given(n=st.integers(1, 500), clients=st.integers(1, 20), seed=seeds)
def test_iid_partition_is_balanced_and_exact(n: int, clients: int, seed: int) -> None:
    clients = min(clients, n)
    parts = iid_partition(n, clients, seed)
    assert_exact_cover(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert all(np.array_equal(a, b) for a, b in zip(parts, iid_partition(n, clients, seed), strict=True))


def test_iid_partition_rejects_too_many_clients() -> None:
    with pytest.raises(ValueError, match=r"num_clients \(4\) exceeds the number of samples \(3\)"):
        iid_partition(3, 4, seed=0)


@PROPERTY
@given(n=st.integers(0, 400), fraction=st.floats(0.0, 0.99), seed=seeds)
def test_train_validation_split_is_exact_and_deterministic(n: int, fraction: float, seed: int) -> None:
    train, val = train_validation_split(n, fraction, seed)
    assert_exact_cover([train, val], n)
    if n >= 1:
        assert len(train) >= 1
    assert abs(len(val) - n * fraction) <= 1 or len(train) == 1
    again = train_validation_split(n, fraction, seed)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])


def test_train_validation_split_edge_cases() -> None:
    train, val = train_validation_split(50, 0.0, seed=3)
    assert len(val) == 0 and np.array_equal(train, np.arange(50))
    train, val = train_validation_split(1, 0.9, seed=3)
    assert np.array_equal(train, [0]) and len(val) == 0
    train, val = train_validation_split(100, 0.2, seed=3)
    assert len(val) == 20 and len(train) == 80
    for fraction in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="validation fraction"):
            train_validation_split(10, fraction, seed=0)
