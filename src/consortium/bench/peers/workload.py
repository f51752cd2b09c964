"""The reference FedAvg workload every runner of `consortium bench sim` trains, so that only orchestration differs.

- data: scikit-learn's bundled digits (1797 rows, 64 pixels scaled to [0, 1], 10 classes), split 80/20
  stratified with seed 0 (1437 training rows, 360 test rows);
- partition: per label, a Dirichlet(0.5) draw over the N clients (seed 42) cuts that label's shuffled rows;
  a client left without rows takes the last row of the then-largest client;
- model: MLP 64-128-10 (Linear, ReLU, Linear) created right after ``torch.manual_seed(0)``;
- local training: one epoch, batch 32, plain SGD lr 0.05, cross-entropy, rows reshuffled from a given seed.

Importable without ``consortium`` (see the package docstring); the simulator side converts these tensors into
its own types in :mod:`consortium.bench.sim_worker`.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
from torch import nn

SPLIT_SEED = 0
PARTITION_SEED = 42
MODEL_SEED = 0
DIRICHLET_ALPHA = 0.5
LAYERS = (64, 128, 10)
BATCH_SIZE = 32
LEARNING_RATE = 0.05
LOCAL_EPOCHS = 1
THREADS_VARIABLE = "ANCHOR_TORCH_THREADS"
"""Intra-op torch threads of a runner process (default 1), the same variable the peers have always read."""


def set_threads() -> int:
    """Give torch the thread count the bench asked for (1 unless set) and return it."""
    threads = int(os.environ.get(THREADS_VARIABLE, "1"))
    torch.set_num_threads(threads)
    return threads


@functools.cache
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``: float32 pixels in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    pixels, labels = load_digits(return_X_y=True)
    features = (pixels / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels.astype(np.int64), test_size=0.2, random_state=SPLIT_SEED, stratify=labels
    )
    return tuple(torch.from_numpy(a) for a in (x_train, y_train, x_test, y_test))  # type: ignore[return-value]


@functools.cache
def client_rows(
    num_clients: int, alpha: float = DIRICHLET_ALPHA, seed: int = PARTITION_SEED
) -> tuple[np.ndarray, ...]:
    """Each client's training-row indices (int64, ascending); every client gets at least one row."""
    labels = digits()[1].numpy()
    rng = np.random.default_rng(seed)
    owned: list[list[int]] = [[] for _ in range(num_clients)]
    for label in range(int(labels.max()) + 1):
        rows = np.flatnonzero(labels == label)
        rng.shuffle(rows)
        shares = rng.dirichlet(np.full(num_clients, alpha))
        boundaries = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
        for client, piece in enumerate(np.split(rows, boundaries)):
            owned[client] += piece.tolist()
    for client in range(num_clients):
        if not owned[client]:
            largest = int(np.argmax([len(rows) for rows in owned]))
            owned[client].append(owned[largest].pop())
    return tuple(np.sort(np.asarray(rows, dtype=np.int64)) for rows in owned)


def client_data(client: int, num_clients: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One client's training rows and labels."""
    x_train, y_train = digits()[:2]
    rows = torch.from_numpy(client_rows(num_clients)[client])
    return x_train[rows], y_train[rows]


def initial_model() -> nn.Sequential:
    """The MLP with the workload's initial weights (the same for every runner and every call)."""
    torch.manual_seed(MODEL_SEED)
    hidden_in, hidden, classes = LAYERS
    return nn.Sequential(nn.Linear(hidden_in, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def train_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> float:
    """``LOCAL_EPOCHS`` of SGD over ``(x, y)`` in an order drawn from ``seed``; the mean training loss."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    order_source = torch.Generator().manual_seed(seed)
    loss_sum, rows_seen = 0.0, 0
    for _ in range(LOCAL_EPOCHS):
        order = torch.randperm(len(y), generator=order_source)
        for batch in order.split(BATCH_SIZE):
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(batch)
            rows_seen += len(batch)
    return loss_sum / max(rows_seen, 1)


@torch.no_grad()
def test_accuracy(model: nn.Module) -> tuple[float, float]:
    """``(loss, accuracy)`` of ``model`` on the test split."""
    x_test, y_test = digits()[2:]
    model.eval()
    logits = model(x_test)
    accuracy = (logits.argmax(dim=1) == y_test).float().mean()
    return float(nn.functional.cross_entropy(logits, y_test)), float(accuracy)


def peak_rss_mb() -> float:
    """This process's own peak resident set (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
