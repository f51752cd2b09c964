"""Batched cohort training equals each client's own local_update (classifier and k-means)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from consortium.fl.algorithms.classifier import Classifier
from consortium.fl.algorithms.kmeans import KMeans
from consortium.fl.cohort import Cohort, by_decreasing_size, plan_local_steps
from consortium.fl.core import LocalData, derive_seed, parse_hyperparams
from consortium.fl.data import dirichlet_label_partition


def make_cohort(sizes: list[int], start: int = 0) -> Cohort:
    parts, offset = [], start
    for size in sizes:
        parts.append(np.arange(offset, offset + size))
        offset += size
    order = by_decreasing_size(np.array(sizes))
    return Cohort.from_parts(
        [f"c{i}" for i in order], [parts[i] for i in order], [derive_seed("test", int(i)) for i in order]
    )


def blobs(n: int = 400, features: int = 6, classes: int = 4, seed: int = 0) -> LocalData:
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=generator)
    centres = torch.randn(classes, features, generator=generator) * 2
    return LocalData(centres[y] + torch.randn(n, features, generator=generator), y)


CLOSE = {"rtol": 1e-4, "atol": 1e-4}
"""float32 sums in a different order drift by ~1e-5 over tens of momentum steps; a wrong batch or step is ~1e-2."""


def one_by_one(algorithm, hp, params, data: LocalData, cohort: Cohort):
    updates = []
    for c in range(len(cohort)):
        rows = torch.as_tensor(cohort.rows[cohort.offsets[c] : cohort.offsets[c + 1]])
        updates.append(
            algorithm.local_update(hp, params, LocalData(data.x[rows], data.y[rows]), cohort.seeds[c])
        )
    return updates


SETTINGS = [
    {},
    {"momentum": 0.9, "local_epochs": 3, "batch_size": 5},
    {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.01, "local_epochs": 2, "batch_size": 8},
    {"proximal_mu": 0.5, "activation": "tanh", "batch_size": 3},
    {"conv": {"input_shape": [1, 2, 3], "channels": [3], "kernel_size": 3, "pool": 1}, "local_epochs": 2},
]


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("sizes", [[1], [40, 1, 7, 33, 2, 16, 16, 5], [3] * 20 + [90]])
def test_classifier_cohort_equals_each_client_alone(settings: dict, sizes: list[int]) -> None:
    algorithm = Classifier()
    hp = parse_hyperparams(algorithm, {"layers": [6, 12, 4], "lr": 0.1, **settings})
    params = algorithm.init(hp, 6, seed=3)
    data = blobs(sum(sizes))
    cohort = make_cohort(sizes)
    stacked, metrics = algorithm.local_update_cohort(hp, params, data, cohort)
    for c, update in enumerate(one_by_one(algorithm, hp, params, data, cohort)):
        for name, tensor in update.tensors.items():
            torch.testing.assert_close(stacked[name][c], tensor, **CLOSE)
        for name, value in update.metrics.items():
            assert abs(float(metrics[name][c]) - value) < 1e-5


SUMMED_SETTINGS = [
    {},
    {"momentum": 0.9, "weight_decay": 0.01},
    {"proximal_mu": 0.5, "activation": "tanh"},
    {"optimizer": "adam", "lr": 0.01},
    {"local_epochs": 2},
    {"conv": {"input_shape": [1, 2, 3], "channels": [3, 2], "kernel_size": 3, "pool": 1}},
]


@pytest.mark.parametrize("settings", SUMMED_SETTINGS)
@pytest.mark.parametrize("sizes", [[1, 2, 3, 8], [40, 0, 1, 7, 33, 2, 16, 16, 5], [3] * 20 + [90]])
def test_classifier_cohort_sums_equal_the_weighted_sum_of_each_client_alone(
    settings: dict, sizes: list[int]
) -> None:
    """The FedAvg numerator sum_c n_c params_c, whether a client's one SGD step is folded into a shared
    gradient or not (Adam and several epochs never take that path), and each client's metrics."""
    algorithm = Classifier()
    hp = parse_hyperparams(algorithm, {"layers": [6, 12, 4], "lr": 0.1, "batch_size": 8, **settings})
    params = algorithm.init(hp, 6, seed=3)
    data = blobs(sum(sizes))
    cohort = make_cohort(sizes)
    sums, metrics = algorithm.local_update_cohort_summed(hp, params, data, cohort)
    updates = one_by_one(algorithm, hp, params, data, cohort)
    for name in sums:
        expected = sum(u.num_examples * u.tensors[name].to(torch.float64) for u in updates)
        torch.testing.assert_close(sums[name], expected, rtol=1e-5, atol=1e-5)
    for c, update in enumerate(updates):
        for name, value in update.metrics.items():
            assert abs(float(metrics[name][c]) - value) < 1e-5, (c, name)


def test_unsorted_cohorts_take_the_gathered_path_and_agree() -> None:
    algorithm = Classifier()
    hp = parse_hyperparams(algorithm, {"layers": [6, 4], "momentum": 0.5, "batch_size": 4, "local_epochs": 2})
    params = algorithm.init(hp, 6, seed=0)
    data = blobs(60)
    parts = [np.arange(0, 3), np.arange(3, 40), np.arange(40, 45), np.arange(45, 60)]
    cohort = Cohort.from_parts(["a", "b", "c", "d"], parts, [1, 2, 3, 4])
    plan = plan_local_steps(cohort, hp.batch_size, hp.local_epochs)
    assert any(not isinstance(g.clients, slice) for groups in plan for g in groups)
    stacked, _ = algorithm.local_update_cohort(hp, params, data, cohort)
    for c, update in enumerate(one_by_one(algorithm, hp, params, data, cohort)):
        for name, tensor in update.tensors.items():
            torch.testing.assert_close(stacked[name][c], tensor, **CLOSE)


def test_plan_groups_cover_each_clients_batches_exactly() -> None:
    cohort = make_cohort([70, 33, 32, 9, 1])
    plan = plan_local_steps(cohort, batch_size=32, epochs=2)
    seen: dict[int, list[int]] = {}
    for groups in plan:
        for group in groups:
            positions = (
                range(group.clients.start, group.clients.stop)
                if isinstance(group.clients, slice)
                else group.clients.tolist()
            )
            for row, mask, position in zip(group.rows, group.mask, positions, strict=True):
                seen.setdefault(position, []).extend(row[mask.bool()].tolist())
    for c in range(len(cohort)):
        own = sorted(cohort.rows[cohort.offsets[c] : cohort.offsets[c + 1]].tolist())
        assert sorted(seen[c]) == sorted(own * 2), "each row once per epoch"


def test_kmeans_cohort_equals_each_client_alone() -> None:
    algorithm = KMeans()
    hp = parse_hyperparams(algorithm, {"k": 5})
    data = blobs(300)
    params = {"centroids": data.x[:5].to(torch.float64).clone()}
    labels = data.y.numpy()
    parts = dirichlet_label_partition(labels, 9, 0.5, seed=1)
    cohort = Cohort.from_parts([f"c{i}" for i in range(9)], parts, list(range(9)))
    stacked, metrics = algorithm.local_update_cohort(hp, params, data, cohort)
    for c, update in enumerate(one_by_one(algorithm, hp, params, data, cohort)):
        torch.testing.assert_close(stacked["sums"][c], update.tensors["sums"])
        torch.testing.assert_close(stacked["counts"][c], update.tensors["counts"])
        assert abs(float(metrics["inertia"][c]) - update.metrics["inertia"]) < 1e-9
