"""Federated k-means (Lloyd's algorithm over clients).

Initialisation: each client runs k-means++ seeding plus a few Lloyd iterations on its own data and sends
its local centroids with their cluster sizes (aggregates, never raw rows). The server runs a weighted
k-means++ plus weighted Lloyd over the union of those candidates to get the k initial centroids.

Rounds: each client assigns its points to the nearest global centroid and sends per-centroid sums and
counts; the ``kmeans`` strategy divides the totals to get the next centroids. All maths is float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from pydantic import Field

from consortium.fl.cohort import Cohort
from consortium.fl.core import (
    Evaluation,
    FLError,
    LocalData,
    Params,
    TensorSpec,
    Update,
    sorted_updates,
)
from consortium.fl.core import HyperParams as BaseHyperParams

_SERVER_LLOYD_ITERS = 300


class KMeansHyperParams(BaseHyperParams):
    """Number of clusters and the settings of the client-side seeding."""

    k: int = Field(ge=1, le=1 << 16, description="Number of clusters.")
    local_init_iters: int = Field(
        10, ge=0, le=10_000,
        description="Lloyd iterations each client runs on its own data after k-means++ seeding.",
    )
    init_oversampling: int = Field(
        2, ge=1, le=100,
        description="Each client sends k * init_oversampling local centroids as seeding candidates.",
    )
    init_restarts: int = Field(
        10,
        ge=1,
        le=1000,
        description="Weighted k-means++ restarts the server runs over the candidates; the best wins.",
    )


def _squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """[n, k] squared Euclidean distances, clamped at 0 against rounding."""
    cross = x @ centroids.T
    sq = (x * x).sum(dim=1, keepdim=True) - 2.0 * cross + (centroids * centroids).sum(dim=1)
    return sq.clamp_min_(0.0)


def _sample(weights: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` indices drawn with replacement with probability proportional to ``weights``."""
    cdf = torch.cumsum(weights, dim=0)
    draws = torch.rand(count, dtype=torch.float64, generator=generator) * cdf[-1]
    return torch.searchsorted(cdf, draws, right=True).clamp_max_(weights.shape[0] - 1)


def _weighted_kmeans_pp(
    x: torch.Tensor, weights: torch.Tensor, k: int, generator: torch.Generator
) -> torch.Tensor:
    """Greedy k-means++ seeding (as in scikit-learn) of ``k`` centroids among the rows of ``x``.

    Rows are drawn with probability proportional to ``weight * D^2``; once every row with weight is
    covered, further centroids repeat drawn rows (they end up with zero counts).
    """
    d = x.shape[1]
    trials = 2 + int(math.log(k))
    centroids = torch.empty((k, d), dtype=torch.float64)
    first = int(_sample(weights, 1, generator))
    centroids[0] = x[first]
    closest = _squared_distances(x, centroids[:1])[:, 0]
    potential = float((weights * closest).sum())
    for i in range(1, k):
        if potential <= 0.0:
            centroids[i] = x[int(_sample(weights, 1, generator))]
            continue
        candidates = _sample(weights * closest, trials, generator)
        candidate_closest = torch.minimum(closest.unsqueeze(1), _squared_distances(x, x[candidates]))
        potentials = (weights.unsqueeze(1) * candidate_closest).sum(dim=0)
        best = int(torch.argmin(potentials))
        centroids[i] = x[candidates[best]]
        closest = candidate_closest[:, best]
        potential = float(potentials[best])
    return centroids


def _assign(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest centroid of each row (first on ties) and its squared distance."""
    distances, labels = _squared_distances(x, centroids).min(dim=1)
    return labels, distances


def _sums_and_counts(
    x: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    sums = torch.zeros((k, x.shape[1]), dtype=torch.float64).index_add_(0, labels, x * weights.unsqueeze(1))
    counts = torch.zeros(k, dtype=torch.float64).index_add_(0, labels, weights)
    return sums, counts


def _weighted_lloyd(
    x: torch.Tensor, weights: torch.Tensor, centroids: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Weighted Lloyd iterations; returns centroids, their weighted counts and the weighted inertia.

    A centroid that loses all its points keeps its position.
    """
    k = centroids.shape[0]
    for _ in range(iterations):
        labels, _ = _assign(x, centroids)
        sums, counts = _sums_and_counts(x, weights, labels, k)
        chosen = counts > 0
        updated = centroids.clone()
        updated[chosen] = sums[chosen] / counts[chosen].unsqueeze(1)
        if torch.equal(updated, centroids):
            break
        centroids = updated
    labels, distances = _assign(x, centroids)
    _, counts = _sums_and_counts(x, weights, labels, k)
    return centroids, counts, float((weights * distances).sum())


def _points(data: LocalData, num_features: int | None = None) -> torch.Tensor:
    x = data.x
    if x.dim() != 2:
        raise FLError(f"k-means data must be a [n, features] matrix, got shape {tuple(x.shape)}")
    if num_features is not None and x.shape[1] != num_features:
        raise FLError(f"data has {x.shape[1]} features, the centroids have {num_features}")
    x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise FLError("k-means data contains NaN or infinite values")
    return x


def _centroids(hp: KMeansHyperParams, params: Params) -> torch.Tensor:
    centroids = params.get("centroids")
    if centroids is None or centroids.dim() != 2 or centroids.shape[0] != hp.k:
        shape = None if centroids is None else tuple(centroids.shape)
        raise FLError(f"k-means params need 'centroids' of shape [{hp.k}, features], got {shape}")
    return centroids.to(torch.float64)


class KMeans:
    """Federated Lloyd's k-means with client-side k-means++ seeding."""

    name: ClassVar[str] = "kmeans"
    HyperParams: ClassVar[type[KMeansHyperParams]] = KMeansHyperParams
    default_strategy: ClassVar[str] = "kmeans"
    needs_client_init: ClassVar[bool] = True
    trains_in_environments: ClassVar[bool] = False

    def init(self, hp: KMeansHyperParams, num_features: int, seed: int) -> Params:
        raise FLError(
            "k-means takes its initial centroids from the clients: use client_init and init_from_updates"
        )

    def client_init(self, hp: KMeansHyperParams, data: LocalData, seed: int) -> Update:
        """Local seeding candidates: ``k * init_oversampling`` centroids of the client's data and their sizes.

        With fewer distinct points than candidates, some candidates repeat a point and have count 0.
        """
        x = _points(data)
        m = hp.k * hp.init_oversampling
        n = x.shape[0]
        if n == 0:
            return Update(
                {
                    "centroids": torch.zeros((m, x.shape[1]), dtype=torch.float64),
                    "counts": torch.zeros(m, dtype=torch.float64),
                },
                0,
            )
        generator = torch.Generator().manual_seed(seed)
        weights = torch.ones(n, dtype=torch.float64)
        seeds = _weighted_kmeans_pp(x, weights, m, generator)
        centroids, counts, inertia = _weighted_lloyd(x, weights, seeds, hp.local_init_iters)
        return Update({"centroids": centroids, "counts": counts}, n, {"local_inertia": inertia / n})

    def init_from_updates(self, hp: KMeansHyperParams, updates: Sequence[Update], seed: int) -> Params:
        """The k initial centroids: best of ``init_restarts`` weighted k-means++ and Lloyd runs."""
        candidates, weights = [], []
        width = None
        for update in sorted_updates(updates):
            centroids, counts = update.tensors.get("centroids"), update.tensors.get("counts")
            if centroids is None or counts is None:
                raise FLError("a k-means seeding update needs 'centroids' and 'counts'")
            if centroids.dim() != 2 or counts.shape != (centroids.shape[0],):
                raise FLError(
                    f"seeding update has centroids {tuple(centroids.shape)} and counts "
                    f"{tuple(counts.shape)}; expected [m, d] and [m]"
                )
            if width is not None and centroids.shape[1] != width:
                raise FLError(
                    f"seeding updates disagree on the number of features: {width} vs {centroids.shape[1]}"
                )
            width = centroids.shape[1]
            centroids, counts = centroids.to(torch.float64), counts.to(torch.float64)
            if not bool(torch.isfinite(centroids).all() and torch.isfinite(counts).all()):
                raise FLError("a seeding update contains NaN or infinite values")
            keep = counts > 0
            candidates.append(centroids[keep])
            weights.append(counts[keep])
        if not candidates or sum(int(w.numel()) for w in weights) == 0:
            raise FLError("no client sent a non-empty seeding candidate; cannot initialise k-means")
        x = torch.cat(candidates)
        w = torch.cat(weights)
        generator = torch.Generator().manual_seed(seed)
        best, best_inertia = None, math.inf
        for _ in range(hp.init_restarts):
            seeds = _weighted_kmeans_pp(x, w, hp.k, generator)
            centroids, _, inertia = _weighted_lloyd(x, w, seeds, _SERVER_LLOYD_ITERS)
            if inertia < best_inertia:
                best, best_inertia = centroids, inertia
        assert best is not None
        return {"centroids": best}

    def client_init_template(self, hp: KMeansHyperParams, num_features: int) -> dict[str, TensorSpec]:
        """A seeding update: ``m = k * init_oversampling`` candidate ``centroids`` [m, d], ``counts`` [m]."""
        m = hp.k * hp.init_oversampling
        return {
            "centroids": TensorSpec((m, num_features), torch.float64),
            "counts": TensorSpec((m,), torch.float64),
        }

    def update_template(self, hp: KMeansHyperParams, params: Params) -> dict[str, TensorSpec]:
        """Per-centroid ``sums`` [k, d] and ``counts`` [k], both float64."""
        k, d = _centroids(hp, params).shape
        return {"sums": TensorSpec((k, d), torch.float64), "counts": TensorSpec((k,), torch.float64)}

    def check_update_values(self, hp: KMeansHyperParams, update: Update) -> None:
        """FLError unless the ``counts`` (of a seeding or a Lloyd update) are >= 0 and add up to at most the
        update's ``num_examples``: each local point counts once, so the weight an update has in the merge is
        bounded like FedAvg's (the hub bounds ``num_examples`` by the dataset's rows)."""
        counts = update.tensors["counts"]
        if counts.numel() and float(counts.min()) < 0:
            raise FLError("k-means counts must be >= 0")
        total = float(counts.sum())
        if total > update.num_examples * (1 + 1e-9):
            raise FLError(f"k-means counts add up to {total:g}, more than num_examples = {update.num_examples}")

    def local_update(self, hp: KMeansHyperParams, params: Params, data: LocalData, seed: int) -> Update:
        """Assign each local point to its nearest centroid; send per-centroid sums and counts."""
        centroids = _centroids(hp, params)
        x = _points(data, centroids.shape[1])
        n = x.shape[0]
        labels, distances = _assign(x, centroids)
        sums, counts = _sums_and_counts(x, torch.ones(n, dtype=torch.float64), labels, hp.k)
        metrics = {"inertia": float(distances.sum()) / n} if n else {}
        return Update({"sums": sums, "counts": counts}, n, metrics)

    def local_update_cohort(
        self, hp: KMeansHyperParams, params: Params, data: LocalData, cohort: Cohort
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """:meth:`local_update` for every client of ``cohort`` at once: one assignment of all their rows.

        Returns ``sums`` [C, k, d] and ``counts`` [C, k] in cohort order, and the per-client ``inertia``.
        """
        centroids = _centroids(hp, params).to(data.x.device)
        k, d = centroids.shape
        rows = torch.as_tensor(cohort.rows, device=data.x.device)
        x = _points(LocalData(data.x[rows]), d)
        labels, distances = _assign(x, centroids)
        clients = len(cohort)
        owner = torch.repeat_interleave(
            torch.arange(clients, device=x.device), torch.as_tensor(cohort.sizes, device=x.device)
        )
        slot = owner * k + labels
        sums = torch.zeros((clients * k, d), dtype=torch.float64, device=x.device).index_add_(0, slot, x)
        counts = torch.zeros(clients * k, dtype=torch.float64, device=x.device).index_add_(
            0, slot, torch.ones_like(distances)
        )
        sizes = torch.as_tensor(cohort.sizes, dtype=torch.float64, device=x.device)
        inertia = torch.zeros(clients, dtype=torch.float64, device=x.device).index_add_(0, owner, distances)
        return (
            {"sums": sums.view(clients, k, d), "counts": counts.view(clients, k)},
            {"inertia": inertia / sizes.clamp_min(1)},
        )

    def evaluate(self, hp: KMeansHyperParams, params: Params, data: LocalData) -> Evaluation:
        """Mean squared distance of each point to its nearest centroid (``inertia_per_sample``)."""
        centroids = _centroids(hp, params)
        x = _points(data, centroids.shape[1])
        n = x.shape[0]
        if n == 0:
            return Evaluation(0, {})
        _, distances = _assign(x, centroids)
        return Evaluation(n, {"inertia_per_sample": float(distances.sum()) / n})
