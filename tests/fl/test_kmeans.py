"""Federated k-means: client seeding, server initialisation, Lloyd rounds, quality against scikit-learn."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.datasets import load_digits, make_blobs

from consortium.fl.algorithms.kmeans import KMeans, KMeansHyperParams
from consortium.fl.core import (
    FLError,
    LocalData,
    Params,
    Update,
    check_update,
    derive_seed,
    parse_hyperparams,
    weighted_metrics,
)
from consortium.fl.registry import get_strategy
from consortium.fl.data import dirichlet_label_partition


def hyperparams(**values: object) -> KMeansHyperParams:
    return parse_hyperparams(KMeans(), values)


def points(rows: list[list[float]]) -> LocalData:
    return LocalData(torch.tensor(rows, dtype=torch.float64))


def federated_kmeans(hp: KMeansHyperParams, clients: dict[str, LocalData], seed: int, rounds: int) -> Params:
    """The round loop a run executes: client seeding, server init, then Lloyd rounds until nothing moves."""
    algorithm, strategy = KMeans(), get_strategy("kmeans")
    seeding = [
        replace(algorithm.client_init(hp, data, derive_seed(seed, "init", cid)), client_id=cid)
        for cid, data in clients.items()
    ]
    for update in seeding:
        algorithm.check_update_values(hp, update)
    params = algorithm.init_from_updates(hp, seeding, derive_seed(seed, "server"))
    for round_number in range(rounds):
        template = algorithm.update_template(hp, params)
        updates = []
        for cid, data in clients.items():
            update = algorithm.local_update(hp, params, data, derive_seed(seed, round_number, cid))
            check_update(template, update.tensors)
            algorithm.check_update_values(hp, update)
            updates.append(replace(update, client_id=cid))
        new = strategy.aggregate(params, updates)
        if torch.equal(new["centroids"], params["centroids"]):
            break
        params = new
    return params


def total_inertia(hp: KMeansHyperParams, params: Params, clients: dict[str, LocalData]) -> float:
    merged = weighted_metrics([KMeans().evaluate(hp, params, data) for data in clients.values()])
    return merged.metrics["inertia_per_sample"] * merged.num_examples


def test_hyperparams_validation() -> None:
    with pytest.raises(FLError, match="k: Input should be greater than or equal to 1"):
        hyperparams(k=0)
    assert hyperparams(k=3).local_init_iters == 10


def test_server_side_init_is_refused() -> None:
    with pytest.raises(FLError, match="client_init and init_from_updates"):
        KMeans().init(hyperparams(k=2), 2, seed=0)


def test_local_update_hand_case() -> None:
    hp = hyperparams(k=2)
    params = {"centroids": torch.tensor([[0.0, 0.0], [10.0, 10.0]], dtype=torch.float64)}
    data = points([[1.0, 0.0], [0.0, 3.0], [9.0, 10.0], [12.0, 12.0]])
    update = KMeans().local_update(hp, params, data, seed=0)
    check_update(KMeans().update_template(hp, params), update.tensors)
    assert torch.equal(update.tensors["sums"], torch.tensor([[1.0, 3.0], [21.0, 22.0]], dtype=torch.float64))
    assert torch.equal(update.tensors["counts"], torch.tensor([2.0, 2.0], dtype=torch.float64))
    assert update.num_examples == 4
    assert update.metrics["inertia"] == pytest.approx((1 + 9 + 1 + 8) / 4)
    evaluation = KMeans().evaluate(hp, params, data)
    assert evaluation.num_examples == 4
    assert evaluation.metrics["inertia_per_sample"] == pytest.approx(19 / 4)


def test_float32_data_is_accepted_and_feature_mismatch_rejected() -> None:
    hp = hyperparams(k=1)
    params = {"centroids": torch.zeros(1, 2, dtype=torch.float64)}
    update = KMeans().local_update(hp, params, LocalData(torch.ones(3, 2)), seed=0)
    assert update.tensors["sums"].dtype == torch.float64
    with pytest.raises(FLError, match="data has 3 features, the centroids have 2"):
        KMeans().local_update(hp, params, LocalData(torch.ones(3, 3)), seed=0)
    with pytest.raises(FLError, match=r"'centroids' of shape \[2, features\]"):
        KMeans().local_update(hyperparams(k=2), params, LocalData(torch.ones(3, 2)), seed=0)


def test_client_init_sends_aggregates_and_is_deterministic() -> None:
    hp = hyperparams(k=3, init_oversampling=2)
    generator = torch.Generator().manual_seed(0)
    data = LocalData(torch.randn(100, 5, generator=generator))
    first = KMeans().client_init(hp, data, seed=1)
    second = KMeans().client_init(hp, data, seed=1)
    assert first.tensors["centroids"].shape == (6, 5) and first.tensors["centroids"].dtype == torch.float64
    assert first.tensors["counts"].shape == (6,) and first.tensors["counts"].dtype == torch.float64
    assert float(first.tensors["counts"].sum()) == 100 and first.num_examples == 100
    assert all(torch.equal(first.tensors[k], second.tensors[k]) for k in first.tensors)
    check_update(KMeans().client_init_template(hp, 5), first.tensors)


def test_client_init_with_fewer_distinct_points_than_k() -> None:
    hp = hyperparams(k=5, init_oversampling=1)
    data = points([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [5.0, 5.0], [1.0, 1.0]])
    update = KMeans().client_init(hp, data, seed=0)
    counts = update.tensors["counts"]
    assert torch.isfinite(update.tensors["centroids"]).all()
    assert sorted(counts[counts > 0].tolist()) == [1.0, 2.0, 2.0]
    assert int((counts == 0).sum()) == 2
    empty = KMeans().client_init(hp, LocalData(torch.zeros(0, 2)), seed=0)
    assert empty.num_examples == 0
    check_update(KMeans().client_init_template(hp, 2), empty.tensors)


def test_counts_beyond_the_examples_or_negative_are_refused() -> None:
    """A client's weight in the merge is its counts: they are bounded by num_examples (which the hub bounds by
    the dataset's rows), as FedAvg's weight is."""
    hp = hyperparams(k=2)
    data = points([[0.0, 0.0], [1.0, 1.0], [4.0, 4.0]])
    update = KMeans().local_update(hp, {"centroids": torch.tensor([[0.0, 0.0], [4.0, 4.0]],
                                                                  dtype=torch.float64)}, data, seed=0)
    KMeans().check_update_values(hp, update)
    inflated = replace(update, tensors=update.tensors | {"counts": update.tensors["counts"] * 1e12})
    with pytest.raises(FLError, match=r"counts add up to 3e\+12, more than num_examples = 3"):
        KMeans().check_update_values(hp, inflated)
    negative = replace(update, tensors=update.tensors | {"counts": torch.tensor([-1.0, 2.0], dtype=torch.float64)})
    with pytest.raises(FLError, match="counts must be >= 0"):
        KMeans().check_update_values(hp, negative)


def test_init_from_updates_is_order_independent_and_needs_candidates() -> None:
    hp = hyperparams(k=2)
    generator = torch.Generator().manual_seed(0)
    updates = [
        replace(
            KMeans().client_init(hp, LocalData(torch.randn(30, 3, generator=generator)), seed=i),
            client_id=f"c{i}",
        )
        for i in range(3)
    ]
    params = KMeans().init_from_updates(hp, updates, seed=5)
    assert params["centroids"].shape == (2, 3) and params["centroids"].dtype == torch.float64
    reversed_params = KMeans().init_from_updates(hp, updates[::-1], seed=5)
    assert torch.equal(params["centroids"], reversed_params["centroids"])
    empty = Update(
        {"centroids": torch.zeros(4, 3, dtype=torch.float64), "counts": torch.zeros(4, dtype=torch.float64)},
        0,
    )
    with pytest.raises(FLError, match="no client sent a non-empty seeding candidate"):
        KMeans().init_from_updates(hp, [empty], seed=0)


def test_init_from_updates_finds_separated_clusters() -> None:
    """Two clients each hold half of every one of 3 far-apart clusters: init lands on the cluster means."""
    hp = hyperparams(k=3)
    centres = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    clients = {
        f"org-{i}": LocalData(centres.repeat_interleave(20, 0) + torch.randn(60, 2, generator=generator))
        for i in range(2)
    }
    params = federated_kmeans(hp, clients, seed=0, rounds=0)
    distances = torch.cdist(centres, params["centroids"])
    assert float(distances.min(dim=1).values.max()) < 1.0
    assert sorted(distances.argmin(dim=1).tolist()) == [0, 1, 2]


def test_federated_lloyd_matches_sklearn_on_blobs() -> None:
    x, y = make_blobs(n_samples=600, centers=5, n_features=4, cluster_std=1.0, random_state=3)
    parts = dirichlet_label_partition(y, 3, alpha=0.5, seed=0)
    clients = {f"org-{i}": LocalData(torch.tensor(x[p])) for i, p in enumerate(parts)}
    hp = hyperparams(k=5)
    params = federated_kmeans(hp, clients, seed=0, rounds=30)
    reference = SklearnKMeans(n_clusters=5, n_init=10, random_state=0).fit(x).inertia_
    assert total_inertia(hp, params, clients) <= reference * (1 + 1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_federated_lloyd_on_digits_is_within_2_percent_of_sklearn(seed: int) -> None:
    """k=10 on digits over 3 Dirichlet(0.5) partitions, <= 30 rounds (measured: within 0.6%)."""
    x, y = load_digits(return_X_y=True)
    reference = SklearnKMeans(n_clusters=10, n_init=10, random_state=0).fit(x).inertia_
    parts = dirichlet_label_partition(y, 3, alpha=0.5, seed=seed)
    clients = {f"org-{i}": LocalData(torch.tensor(x[p])) for i, p in enumerate(parts)}
    hp = hyperparams(k=10)
    params = federated_kmeans(hp, clients, seed=seed, rounds=30)
    ratio = total_inertia(hp, params, clients) / reference
    assert ratio <= 1.02
    assert np.isfinite(ratio)
