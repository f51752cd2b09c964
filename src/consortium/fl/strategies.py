"""Server-side aggregation strategies.

Every strategy is pure and independent of the order in which updates arrive: updates are put in the
canonical order of :func:`consortium.fl.core.sorted_updates` and summed in float64 before the result is
cast back to the params' dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from consortium.fl.core import FLError, Params, Update, register_strategy, sorted_updates


def _require_tensor(update: Update, name: str) -> torch.Tensor:
    if name not in update.tensors:
        client = update.client_id or "an unnamed client"
        raise FLError(f"the update from {client} has no tensor {name!r}")
    return update.tensors[name]


def _cast_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if not like.is_floating_point() and not like.is_complex():
        value = value.round()
    return value.to(like.dtype)


@register_strategy
class FedAvg:
    """Federated averaging: each tensor becomes the example-weighted mean of the clients' tensors.

    Updates with ``num_examples == 0`` carry no weight and are ignored.
    """

    name: ClassVar[str] = "fedavg"

    def aggregate(self, params: Params, updates: Sequence[Update]) -> Params:
        """``sum_i n_i * t_i / sum_i n_i`` for every tensor name of ``params``."""
        if not updates:
            raise FLError("FedAvg needs at least one update")
        if any(u.num_examples < 0 for u in updates):
            raise FLError("an update has a negative number of examples")
        weighted = [u for u in sorted_updates(updates) if u.num_examples > 0]
        total = sum(u.num_examples for u in weighted)
        if total == 0:
            raise FLError("FedAvg got updates with 0 examples in total; nothing to average")
        result: Params = {}
        for name, current in params.items():
            acc = torch.zeros(current.shape, dtype=torch.float64)
            for update in weighted:
                tensor = _require_tensor(update, name)
                if tuple(tensor.shape) != tuple(current.shape):
                    raise FLError(
                        f"tensor {name!r} from {update.client_id or 'a client'} has shape "
                        f"{tuple(tensor.shape)}, expected {tuple(current.shape)}"
                    )
                acc.add_(tensor.to(torch.float64), alpha=float(update.num_examples))
            result[name] = _cast_like(acc / total, current)
        return result


@register_strategy
class KMeansMerge:
    """Federated Lloyd step: each centroid becomes the mean of all points the clients assigned to it.

    Updates carry per-centroid ``sums`` ([k, d]) and ``counts`` ([k]); a centroid that no client's point
    chose (total count <= 0, which noisy counts can produce) keeps its previous value.
    """

    name: ClassVar[str] = "kmeans"

    def aggregate(self, params: Params, updates: Sequence[Update]) -> Params:
        """``centroids = sum(sums) / sum(counts)``, keeping centroids with zero total count."""
        if not updates:
            raise FLError("k-means merge needs at least one update")
        if "centroids" not in params:
            raise FLError("k-means params need a 'centroids' tensor")
        centroids = params["centroids"]
        k, d = centroids.shape
        sums = torch.zeros((k, d), dtype=torch.float64)
        counts = torch.zeros(k, dtype=torch.float64)
        for update in sorted_updates(updates):
            update_sums = _require_tensor(update, "sums")
            update_counts = _require_tensor(update, "counts")
            if tuple(update_sums.shape) != (k, d) or tuple(update_counts.shape) != (k,):
                raise FLError(
                    f"k-means update from {update.client_id or 'a client'} has sums "
                    f"{tuple(update_sums.shape)} and counts {tuple(update_counts.shape)}, "
                    f"expected ({k}, {d}) and ({k},)"
                )
            sums.add_(update_sums.to(torch.float64))
            counts.add_(update_counts.to(torch.float64))
        chosen = counts > 0
        merged = centroids.to(torch.float64).clone()
        merged[chosen] = sums[chosen] / counts[chosen].unsqueeze(1)
        result = dict(params)
        result["centroids"] = merged.to(centroids.dtype)
        return result
