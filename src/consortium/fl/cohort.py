"""Local training of a whole cohort of clients as one batched computation (the simulator's vectorised path).

The cohort's params are stacked on a leading client axis. At every local step, the clients still training
are split into a few groups of similar batch size; each group's step is one ``torch.func.vmap`` call of the
algorithm's per-client loss gradient, followed by one fused optimiser step on the stacked tensors. The math
is that of each client running its own mini-batch loop: the same shuffling (a ``torch.Generator`` per client
seeded exactly like ``local_update``), the same batches in the same order, the same optimiser step; rows that
pad a short batch to its group's width are masked out of the loss.

Everything here is pure: the caller passes the shared data tensors and the cohort layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from consortium.fl.core import FLError
from consortium.fl.shuffle import segment_permutations

StackedParams = dict[str, torch.Tensor]
"""Named tensors with a leading client axis: ``[C, *shape]``."""

ClientLoss = Callable[
    [dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    tuple[torch.Tensor, torch.Tensor],
]
"""``loss(params, x, y, mask, count) -> (mean_loss, stats)`` for ONE client: the mean loss over the ``count``
unmasked rows, and a 1-D tensor of sums over those rows the algorithm wants to report (e.g. summed loss and
number of correct predictions)."""

OptimizerStep = Callable[[list[torch.Tensor], list[torch.Tensor], "GroupState", int], None]
"""``step(tensors, grads, state, step_number)`` updates ``tensors`` (and ``state``) in place."""


@dataclass(frozen=True)
class Cohort:
    """The clients of one round: which rows of the shared data each holds and the seed of its local work.

    ``rows[offsets[c]:offsets[c + 1]]`` are client ``c``'s rows (in its own data order). Clients are best
    ordered by decreasing size (:func:`by_decreasing_size`): the clients still training at any step are then
    a prefix of the cohort and its groups are contiguous, so they are updated through views, without copies.
    """

    client_ids: tuple[str, ...]
    offsets: np.ndarray
    rows: np.ndarray
    seeds: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.offsets) != len(self.client_ids) + 1 or len(self.seeds) != len(self.client_ids):
            raise FLError("a cohort needs one seed per client and len(client_ids) + 1 offsets")

    def __len__(self) -> int:
        return len(self.client_ids)

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_parts(cls, client_ids: list[str], parts: list[np.ndarray], seeds: list[int]) -> Cohort:
        """A cohort from each client's row indices."""
        sizes = np.array([len(p) for p in parts], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        rows = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
        return cls(tuple(client_ids), offsets, rows, tuple(seeds))

    def select(self, positions: np.ndarray) -> Cohort:
        """The sub-cohort of the clients at ``positions`` (in that order)."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) and np.array_equal(
            positions, np.arange(positions[0], positions[0] + len(positions))
        ):
            first, stop = int(positions[0]), int(positions[-1]) + 1
            offsets = self.offsets[first : stop + 1]
            return Cohort(
                self.client_ids[first:stop],
                offsets - offsets[0],
                self.rows[offsets[0] : offsets[-1]],
                self.seeds[first:stop],
            )
        parts = [self.rows[self.offsets[p] : self.offsets[p + 1]] for p in positions]
        return Cohort.from_parts(
            [self.client_ids[p] for p in positions], parts, [self.seeds[p] for p in positions]
        )


def by_decreasing_size(sizes: np.ndarray) -> np.ndarray:
    """Positions ordering clients by decreasing size (stable), the layout :func:`plan_local_steps` likes."""
    return np.argsort(-np.asarray(sizes), kind="stable")


def shuffled_rows(cohort: Cohort, epochs: int) -> np.ndarray:
    """``[epochs, S]``: for each epoch, every client's rows in its own shuffled order (client-major).

    Client ``c`` visits its rows in :func:`consortium.fl.shuffle.permutation` order for its seed and the
    epoch: the same orders its own ``local_update`` uses.
    """
    seeds = np.array(cohort.seeds, dtype=np.uint64)
    owner_start = np.repeat(cohort.offsets[:-1], cohort.sizes)
    return (
        np.stack(
            [
                cohort.rows[owner_start + segment_permutations(cohort.sizes, seeds, epoch)]
                for epoch in range(epochs)
            ]
        )
        if len(cohort.rows)
        else np.zeros((epochs, 0), dtype=np.int64)
    )


@dataclass(frozen=True)
class StepGroup:
    """Clients that take one local step together: their batch rows padded to one width, with a mask."""

    clients: slice | torch.Tensor
    rows: torch.Tensor
    mask: torch.Tensor
    counts: torch.Tensor
    last_epoch: torch.Tensor
    """[G] float64, 1.0 where this step belongs to the client's last local epoch."""

    @property
    def size(self) -> int:
        return int(self.rows.shape[0])


def _bucket(batch: np.ndarray, cap: int) -> np.ndarray:
    """Power-of-two width that holds each batch (at most ``cap``): bounds padding at 2x with few groups."""
    width = np.left_shift(1, np.ceil(np.log2(np.maximum(batch, 1))).astype(np.int64))
    return np.minimum(width, cap)


def _client_selector(positions: np.ndarray, device: torch.device) -> slice | torch.Tensor:
    first, last = int(positions[0]), int(positions[-1])
    if last - first + 1 == len(positions):
        return slice(first, last + 1)
    return torch.as_tensor(positions, device=device)


def plan_local_steps(
    cohort: Cohort, batch_size: int, epochs: int, device: torch.device | str = "cpu"
) -> list[list[StepGroup]]:
    """For each local step, the groups of clients that take it, with their batches' rows.

    Client ``c`` takes ``epochs * ceil(n_c / batch_size)`` steps; its step ``t`` uses batch ``t % k_c`` of its
    epoch ``t // k_c`` order, like a plain loop over epochs and batches.
    """
    device = torch.device(device)
    sizes = cohort.sizes
    orders = shuffled_rows(cohort, epochs)
    per_epoch = -(-sizes // batch_size)
    total = per_epoch * epochs
    plan: list[list[StepGroup]] = []
    for step in range(int(total.max(initial=0))):
        active = np.flatnonzero(total > step)
        k = per_epoch[active]
        epoch, batch_index = step // k, step % k
        start = batch_index * batch_size
        batch = np.minimum(batch_size, sizes[active] - start)
        widths = _bucket(batch, batch_size)
        groups = []
        for width in np.unique(widths)[::-1]:
            chosen = np.flatnonzero(widths == width)
            columns = np.arange(width)
            valid = columns[None, :] < batch[chosen, None]
            local = cohort.offsets[active[chosen], None] + start[chosen, None] + columns[None, :]
            local = np.where(valid, local, cohort.offsets[active[chosen], None])
            rows = orders[epoch[chosen, None], local]
            groups.append(
                StepGroup(
                    clients=_client_selector(active[chosen], device),
                    rows=torch.as_tensor(rows, device=device),
                    mask=torch.as_tensor(valid, dtype=torch.float32, device=device),
                    counts=torch.as_tensor(batch[chosen], dtype=torch.float32, device=device),
                    last_epoch=torch.as_tensor(
                        epoch[chosen] == epochs - 1, dtype=torch.float64, device=device
                    ),
                )
            )
        plan.append(groups)
    return plan


class GroupState:
    """Optimiser buffers (momentum, second moments) of a cohort, viewed or gathered for one step group."""

    def __init__(self, buffers: dict[str, list[torch.Tensor]], clients: slice | torch.Tensor) -> None:
        self._all = buffers
        self._clients = clients
        self.gathered = not isinstance(clients, slice)
        self.buffers = {key: [t[clients] for t in tensors] for key, tensors in buffers.items()}

    def write_back(self) -> None:
        """Scatter gathered buffers back into the cohort's (a no-op for views)."""
        if self.gathered:
            for key, tensors in self.buffers.items():
                for full, part in zip(self._all[key], tensors, strict=True):
                    full.index_copy_(0, self._clients, part)


def stack_params(params: dict[str, torch.Tensor], names: list[str], clients: int) -> StackedParams:
    """Every client starts from the global params: ``[C, *shape]`` copies (one allocation per tensor)."""
    return {name: params[name].unsqueeze(0).expand(clients, *params[name].shape).clone() for name in names}


def train_cohort(
    stacked: StackedParams,
    loss: ClientLoss,
    x: torch.Tensor,
    y: torch.Tensor,
    plan: list[list[StepGroup]],
    optimizer_step: OptimizerStep,
    buffers: dict[str, list[torch.Tensor]],
    stats: torch.Tensor,
) -> None:
    """Run every planned local step on ``stacked`` (in place), adding to ``stats`` (``[C, k]`` float64) each
    client's loss stats summed over the batches of its last local epoch.

    Each step group is one ``vmap`` of the per-client loss over the group's stacked params and batches; the sum
    of the clients' losses is differentiated with ordinary autograd, which gives every client exactly its own
    gradient (the clients share no parameters). This avoids ``torch.func.grad``, whose first call imports the
    compiler stack (~70 MB).
    """
    names = list(stacked)
    losses = torch.func.vmap(loss, in_dims=(0, 0, 0, 0, 0))
    for step_number, groups in enumerate(plan, start=1):
        for group in groups:
            tensors = [stacked[name][group.clients] for name in names]
            leaves = [t.detach().requires_grad_() for t in tensors]
            with torch.enable_grad():
                mean_losses, group_stats = losses(
                    dict(zip(names, leaves, strict=True)),
                    x[group.rows],
                    y[group.rows],
                    group.mask,
                    group.counts,
                )
                grads = list(torch.autograd.grad(mean_losses.sum(), leaves))
            stats[group.clients] += group_stats.detach().to(torch.float64) * group.last_epoch.unsqueeze(1)
            state = GroupState(buffers, group.clients)
            optimizer_step(tensors, grads, state, step_number)
            if state.gathered:
                for name, part in zip(names, tensors, strict=True):
                    stacked[name].index_copy_(0, group.clients, part)
                state.write_back()


def bias_corrections(step_number: int, betas: tuple[float, float]) -> tuple[float, float]:
    """Adam's ``1 - beta1^t`` and ``sqrt(1 - beta2^t)`` for step ``t``."""
    return 1 - betas[0] ** step_number, math.sqrt(1 - betas[1] ** step_number)
