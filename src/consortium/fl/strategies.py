"""Server-side aggregation: the shared base of the strategies and the linear rules.

*Linear* rules (FedAvg, the k-means merge) weigh each update by its examples and reduce to float64 sums, so a
cohort can be reduced in chunks: ``finish(params, merge_partials(partial(A), partial(B)))``. The robust rules
live in :mod:`consortium.fl.robust`.

Every strategy is pure and independent of the order in which updates arrive: updates are stacked in the
canonical order of :func:`consortium.fl.core.stack_updates` (ties between equally good updates go to the
earlier client id), computed in float64 on the device they came on, and cast back to the params' dtype.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch

from consortium.fl.core import (
    TOTAL_WEIGHT,
    FLError,
    Params,
    StackedUpdates,
    Update,
    stack_updates,
)

Shapes = dict[str, tuple[int, ...]]


def cast_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` (float64) in ``like``'s dtype, rounded first when that dtype is not floating or complex."""
    if not like.is_floating_point() and not like.is_complex():
        value = value.round()
    return value.to(like.dtype)


def shapes_of(params: Params) -> Shapes:
    """The per-client shape of each tensor an update carries for these params."""
    return {name: tuple(t.shape) for name, t in params.items()}


def _require(tensors: Mapping[str, torch.Tensor], name: str, owner: str) -> torch.Tensor:
    if name not in tensors:
        raise FLError(f"{owner} have no tensor {name!r}")
    return tensors[name]


def check_shapes(tensors: Mapping[str, torch.Tensor], shapes: Shapes, owner: str, leading_dims: int) -> None:
    """FLError unless ``tensors`` hold every name of ``shapes``, shaped so after ``leading_dims`` axes."""
    for name, shape in shapes.items():
        got = tuple(_require(tensors, name, owner).shape[leading_dims:])
        if got != shape:
            raise FLError(f"tensor {name!r} of {owner} has shape {got}, expected {shape}")


class StackingStrategy(ABC):
    """Shared entry point: ``aggregate`` stacks the updates and hands them to ``aggregate_stacked``."""

    name: ClassVar[str]
    linear: ClassVar[bool]

    def update_shapes(self, params: Params) -> Shapes:
        """The tensors (and their per-client shapes) this strategy reads from each update."""
        return shapes_of(params)

    def aggregate(self, params: Params, updates: Sequence[Update]) -> Params:
        """The next global params from the current ones and the round's updates."""
        if not updates:
            raise FLError(f"{self.name} needs at least one update")
        return self.aggregate_stacked(params, stack_updates(updates, self.update_shapes(params)))

    @abstractmethod
    def check_cohort(self, num_clients: int) -> None: ...

    @abstractmethod
    def aggregate_stacked(self, params: Params, stacked: StackedUpdates) -> Params: ...


# ---------------------------------------------------------------------------------------------- linear rules


def _weighted_sum(stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_c weights[c] * stacked[c]`` in float64."""
    return torch.tensordot(weights, stacked.to(torch.float64), dims=1)


def _total_weight(partial: Params) -> float:
    return float(_require(partial, TOTAL_WEIGHT, "the partial sums"))


class FedAvg(StackingStrategy):
    """Federated averaging: each tensor becomes the example-weighted mean of the clients' tensors.

    Updates with ``num_examples == 0`` carry no weight and are ignored.
    """

    name: ClassVar[str] = "fedavg"
    linear: ClassVar[bool] = True

    def check_cohort(self, num_clients: int) -> None:
        """FedAvg works with any number of updates."""

    def aggregate_stacked(self, params: Params, stacked: StackedUpdates) -> Params:
        """``sum_i n_i * t_i / sum_i n_i`` for every tensor name of ``params``."""
        check_shapes(stacked.tensors, shapes_of(params), "the updates", leading_dims=1)
        return self.finish(params, self.partial(stacked))

    def partial(self, stacked: StackedUpdates) -> Params:
        """Float64 ``sum_i n_i * t_i`` of every stacked tensor, and ``sum_i n_i`` under ``TOTAL_WEIGHT``."""
        if TOTAL_WEIGHT in stacked.tensors:
            raise FLError(f"an update tensor is named {TOTAL_WEIGHT!r}, a name reserved for the total weight")
        weights = stacked.num_examples
        if bool((weights < 0).any()):
            raise FLError("an update has a negative number of examples")
        tensors = stacked.tensors
        positive = weights > 0
        if not bool(positive.all()):
            weights = weights[positive]
            tensors = {name: t[positive] for name, t in tensors.items()}
        sums = {name: _weighted_sum(t, weights) for name, t in tensors.items()}
        sums[TOTAL_WEIGHT] = weights.sum()
        return sums

    def partial_of_weighted_sums(self, sums: Params, total_weight: torch.Tensor) -> Params:
        """The partial of updates whose float64 sums ``sum_i n_i t_i`` were computed elsewhere (the simulator
        sums clients without materialising each one's params); equals :meth:`partial` of those updates."""
        if TOTAL_WEIGHT in sums:
            raise FLError(f"an update tensor is named {TOTAL_WEIGHT!r}, a name reserved for the total weight")
        return {**sums, TOTAL_WEIGHT: total_weight.to(torch.float64)}

    def finish(self, params: Params, partial: Params) -> Params:
        """The weighted means from the (merged) partial sums, cast to the params' dtypes."""
        total = _total_weight(partial)
        if total == 0:
            raise FLError("FedAvg got updates with 0 examples in total; nothing to average")
        check_shapes(partial, shapes_of(params), "the partial sums", leading_dims=0)
        return {name: cast_like(partial[name] / total, current) for name, current in params.items()}


def _centroids(params: Params) -> torch.Tensor:
    if "centroids" not in params:
        raise FLError("k-means params need a 'centroids' tensor")
    return params["centroids"]


class KMeansMerge(StackingStrategy):
    """Federated Lloyd step: each centroid becomes the mean of all points the clients assigned to it.

    Updates carry per-centroid ``sums`` ([k, d]) and ``counts`` ([k]); a centroid that no client's point
    chose (total count <= 0, which noisy counts can produce) keeps its previous value.
    """

    name: ClassVar[str] = "kmeans"
    linear: ClassVar[bool] = True

    def check_cohort(self, num_clients: int) -> None:
        """The merge works with any number of updates."""

    def update_shapes(self, params: Params) -> Shapes:
        k, d = _centroids(params).shape
        return {"sums": (k, d), "counts": (k,)}

    def aggregate_stacked(self, params: Params, stacked: StackedUpdates) -> Params:
        """``centroids = sum(sums) / sum(counts)``, keeping centroids with zero total count."""
        check_shapes(stacked.tensors, self.update_shapes(params), "the updates", leading_dims=1)
        return self.finish(params, self.partial(stacked))

    def partial(self, stacked: StackedUpdates) -> Params:
        """Float64 totals of ``sums`` and ``counts``, and ``sum_i n_i`` under ``TOTAL_WEIGHT``."""
        return {
            "sums": _require(stacked.tensors, "sums", "the updates").to(torch.float64).sum(0),
            "counts": _require(stacked.tensors, "counts", "the updates").to(torch.float64).sum(0),
            TOTAL_WEIGHT: stacked.num_examples.sum(),
        }

    def finish(self, params: Params, partial: Params) -> Params:
        """The merged centroids from the (merged) partial totals; the params' other tensors are kept."""
        centroids = _centroids(params)
        check_shapes(partial, self.update_shapes(params), "the partial sums", leading_dims=0)
        sums, counts = partial["sums"], partial["counts"]
        chosen = counts > 0
        merged = centroids.to(torch.float64).clone()
        merged[chosen] = sums[chosen] / counts[chosen].unsqueeze(1)
        return dict(params) | {"centroids": merged.to(centroids.dtype)}
