"""Seeded index partitions of a dataset: across clients (IID, Dirichlet label skew) and train/validation.

Pure numpy: every function returns sorted int64 index arrays and depends only on its arguments.
"""

from __future__ import annotations

import math

import numpy as np


def _check_clients(n: int, num_clients: int) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if num_clients > n:
        raise ValueError(
            f"num_clients ({num_clients}) exceeds the number of samples ({n}); each client needs one"
        )


def iid_partition(n: int, num_clients: int, seed: int) -> list[np.ndarray]:
    """Shuffle ``range(n)`` and cut it into ``num_clients`` parts whose sizes differ by at most one."""
    _check_clients(n, num_clients)
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, num_clients)]


def dirichlet_label_partition(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int
) -> list[np.ndarray]:
    """Label-skewed partition: each class is split across clients by proportions drawn from Dirichlet(alpha).

    Small ``alpha`` gives each client few classes, large ``alpha`` approaches IID. A client left empty gets
    one sample from the currently largest client, so every client has at least one sample. Every index of
    ``labels`` appears in exactly one returned (sorted, int64) array.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {labels.shape}")
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        alpha = math.nan
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"the Dirichlet concentration alpha must be a finite number > 0, got {alpha!r}")
    _check_clients(len(labels), num_clients)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        proportions = rng.dirichlet(np.full(num_clients, alpha))
        cuts = np.floor(np.cumsum(proportions)[:-1] * len(members)).astype(np.int64)
        for client, chunk in enumerate(np.split(members, cuts)):
            parts[client].append(chunk)
    clients = [np.concatenate(chunks).astype(np.int64) for chunks in parts]
    for empty in range(num_clients):
        if len(clients[empty]) == 0:
            largest = max(range(num_clients), key=lambda c: (len(clients[c]), -c))
            take = int(rng.integers(len(clients[largest])))
            clients[empty] = clients[largest][take : take + 1].copy()
            clients[largest] = np.delete(clients[largest], take)
    return [np.sort(indices) for indices in clients]


def train_validation_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into (train, validation) sorted int64 indices.

    About ``fraction`` of the samples go to validation (rounded), but at least one sample stays in train
    whenever ``n >= 1``; ``fraction == 0`` gives an empty validation set.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not (math.isfinite(fraction) and 0.0 <= fraction < 1.0):
        raise ValueError(f"the validation fraction must be in [0, 1), got {fraction!r}")
    num_val = n - train_rows(n, fraction)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[num_val:]).astype(np.int64), np.sort(order[:num_val]).astype(np.int64)


def train_rows(n: int, fraction: float) -> int:
    """How many of ``n`` rows :func:`train_validation_split` keeps for training (whatever its seed)."""
    return n - min(round(n * fraction), max(n - 1, 0))


def shard_partition(labels: np.ndarray, num_clients: int, shards_per_client: int, seed: int) -> list[np.ndarray]:
    """Pathological non-IID split (McMahan et al. 2017): sort by label, cut into equal shards, deal them out.

    The samples are ordered by label (ties broken by a seeded shuffle), cut into
    ``num_clients * shards_per_client`` shards whose sizes differ by at most one, and each client gets
    ``shards_per_client`` shards drawn at random, so most clients see only a few classes.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {labels.shape}")
    if shards_per_client < 1:
        raise ValueError(f"shards per client must be >= 1, got {shards_per_client}")
    _check_clients(len(labels), num_clients)
    num_shards = num_clients * shards_per_client
    if num_shards > len(labels):
        raise ValueError(
            f"{num_clients} clients x {shards_per_client} shards = {num_shards} shards exceed the "
            f"{len(labels)} samples; use fewer clients or fewer shards per client"
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(by_label, num_shards)
    dealt = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([shards[s] for s in row])).astype(np.int64) for row in dealt]
