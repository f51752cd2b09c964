"""Server-side aggregation strategies.

*Linear* rules (FedAvg, the k-means merge) weigh each update by its examples and reduce to float64 sums, so a
cohort can be reduced in chunks: ``finish(params, merge_partials(partial(A), partial(B)))``.

*Robust* rules (Krum, Multi-Krum, coordinate-wise median and trimmed mean, Bulyan, centered clipping) bound
the influence of a few arbitrary (Byzantine) updates. They are unweighted: every update counts once, whatever
its ``num_examples``. They read the update tensors as given; for a classifier these are local models, and
distances between local models equal distances between their deltas from the common global params.

Every strategy is pure and independent of the order in which updates arrive: updates are stacked in the
canonical order of :func:`consortium.fl.core.stack_updates` (ties between equally good updates go to the
earlier client id), computed in float64 on the device they came on, and cast back to the params' dtype.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import ClassVar

import torch
from pydantic import Field, field_validator

from consortium.fl.core import (
    TOTAL_WEIGHT,
    FLError,
    Options,
    Params,
    StackedUpdates,
    Update,
    parse_options,
    stack_updates,
)

Shapes = dict[str, tuple[int, ...]]


def _cast_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if not like.is_floating_point() and not like.is_complex():
        value = value.round()
    return value.to(like.dtype)


def _shapes_of(params: Params) -> Shapes:
    return {name: tuple(t.shape) for name, t in params.items()}


def _require(tensors: Mapping[str, torch.Tensor], name: str, owner: str) -> torch.Tensor:
    if name not in tensors:
        raise FLError(f"{owner} have no tensor {name!r}")
    return tensors[name]


def _check_shapes(tensors: Mapping[str, torch.Tensor], shapes: Shapes, owner: str, leading_dims: int) -> None:
    """FLError unless ``tensors`` hold every name of ``shapes``, shaped so after ``leading_dims`` axes."""
    for name, shape in shapes.items():
        got = tuple(_require(tensors, name, owner).shape[leading_dims:])
        if got != shape:
            raise FLError(f"tensor {name!r} of {owner} has shape {got}, expected {shape}")


class _StackingStrategy(ABC):
    """Shared entry point: ``aggregate`` stacks the updates and hands them to ``aggregate_stacked``."""

    name: ClassVar[str]
    linear: ClassVar[bool]

    def update_shapes(self, params: Params) -> Shapes:
        """The tensors (and their per-client shapes) this strategy reads from each update."""
        return _shapes_of(params)

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


class FedAvg(_StackingStrategy):
    """Federated averaging: each tensor becomes the example-weighted mean of the clients' tensors.

    Updates with ``num_examples == 0`` carry no weight and are ignored.
    """

    name: ClassVar[str] = "fedavg"
    linear: ClassVar[bool] = True

    def check_cohort(self, num_clients: int) -> None:
        """FedAvg works with any number of updates."""

    def aggregate_stacked(self, params: Params, stacked: StackedUpdates) -> Params:
        """``sum_i n_i * t_i / sum_i n_i`` for every tensor name of ``params``."""
        _check_shapes(stacked.tensors, _shapes_of(params), "the updates", leading_dims=1)
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
        _check_shapes(partial, _shapes_of(params), "the partial sums", leading_dims=0)
        return {name: _cast_like(partial[name] / total, current) for name, current in params.items()}


def _centroids(params: Params) -> torch.Tensor:
    if "centroids" not in params:
        raise FLError("k-means params need a 'centroids' tensor")
    return params["centroids"]


class KMeansMerge(_StackingStrategy):
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
        _check_shapes(stacked.tensors, self.update_shapes(params), "the updates", leading_dims=1)
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
        _check_shapes(partial, self.update_shapes(params), "the partial sums", leading_dims=0)
        sums, counts = partial["sums"], partial["counts"]
        chosen = counts > 0
        merged = centroids.to(torch.float64).clone()
        merged[chosen] = sums[chosen] / counts[chosen].unsqueeze(1)
        return dict(params) | {"centroids": merged.to(centroids.dtype)}


# ---------------------------------------------------------------------------------------------- robust rules


MAX_COHORT = 1_000_000
"""Bound of the counts in a rule's options (f, m): no round aggregates more updates."""


class NoOptions(Options):
    """A rule without options."""


class KrumOptions(Options):
    f: int = Field(ge=0, le=MAX_COHORT, description="how many Byzantine (arbitrary) updates a round may hold")


class MultiKrumOptions(KrumOptions):
    m: int | None = Field(
        default=None, ge=1, le=MAX_COHORT, description="updates selected and averaged; n - f if omitted"
    )


class TrimmedMeanOptions(Options):
    beta: float = Field(default=0.1, ge=0, allow_inf_nan=False, description="fraction trimmed from each end")
    f: int | None = Field(
        default=None, ge=0, le=MAX_COHORT, description="Byzantine updates to tolerate; checks beta >= f/n"
    )

    @field_validator("beta")
    @classmethod
    def _keeps_a_value_for_every_n(cls, beta: float) -> float:
        if beta >= 0.5:
            raise ValueError(f"beta={beta} would trim 2⌊βn⌋ >= n values for some n; it must be below 0.5")
        return beta


class CenteredClippingOptions(Options):
    tau: float = Field(gt=0, allow_inf_nan=False, description="clip radius around the current center")
    iterations: int = Field(default=1, ge=1, le=100, description="clipping iterations L")


class _RobustRule(_StackingStrategy):
    """An unweighted rule: every update counts once, whatever its ``num_examples``."""

    linear: ClassVar[bool] = False
    Options: ClassVar[type[Options]] = NoOptions

    def __init__(self, **options: object) -> None:
        self.options = parse_options(self.Options, options, f"strategy {self.name!r}")

    def check_cohort(self, num_clients: int) -> None:
        if num_clients < 1:
            raise FLError(f"{self.name} needs at least one update per round, got {num_clients}")

    def aggregate_stacked(self, params: Params, stacked: StackedUpdates) -> Params:
        """The rule applied to the float64 values of every tensor of ``params``, cast to its dtype."""
        _check_shapes(stacked.tensors, _shapes_of(params), "the updates", leading_dims=1)
        self.check_cohort(len(stacked))
        values = {name: stacked.tensors[name].to(torch.float64) for name in params}
        combined = self.combine(params, values)
        return {name: _cast_like(combined[name], current) for name, current in params.items()}

    @abstractmethod
    def combine(self, params: Params, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The float64 aggregate of ``values`` (name -> [n, *shape]) given the current ``params``."""


def _median_of_sorted(ordered: torch.Tensor) -> torch.Tensor:
    """Median along axis 0 of values sorted on it; the mean of the two middle values for an even count."""
    n = ordered.shape[0]
    middle = n // 2
    if n % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _coordinate_median(values: torch.Tensor) -> torch.Tensor:
    return _median_of_sorted(torch.sort(values, dim=0).values)


def _coordinate_trimmed_mean(values: torch.Tensor, trim: int) -> torch.Tensor:
    """Per coordinate: drop the ``trim`` smallest and ``trim`` largest values, average the rest."""
    ordered = torch.sort(values, dim=0).values
    return ordered[trim : values.shape[0] - trim].mean(0)


def _mean_closest_to_median(values: torch.Tensor, keep: int) -> torch.Tensor:
    """Per coordinate: the mean of the ``keep`` values closest to the median (ties to the smaller value)."""
    ordered = torch.sort(values, dim=0).values
    distance = (ordered - _median_of_sorted(ordered)).abs()
    nearest = torch.sort(distance, dim=0, stable=True).indices[:keep]
    return torch.gather(ordered, 0, nearest).mean(0)


def _trim_count(beta: float, n: int) -> int:
    """⌊βn⌋ for β as written (0.29 * 100 is 29, not the 28.999... of binary floats)."""
    return math.floor(Fraction(str(beta)) * n)


class Median(_RobustRule):
    """Coordinate-wise median (Yin et al. 2018). Unweighted; no options.

    For an even number of updates, the mean of the two middle values.
    """

    name: ClassVar[str] = "median"

    def combine(self, params: Params, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: _coordinate_median(v) for name, v in values.items()}


class TrimmedMean(_RobustRule):
    """Coordinate-wise trimmed mean (Yin et al. 2018): drop the ⌊βn⌋ smallest and largest values. Unweighted.

    Options: ``beta`` (default 0.1, below 0.5) and, optionally, ``f``: then ⌊βn⌋ >= f is required, so that
    every Byzantine value can be trimmed.
    """

    name: ClassVar[str] = "trimmed_mean"
    Options: ClassVar[type[Options]] = TrimmedMeanOptions

    def check_cohort(self, num_clients: int) -> None:
        super().check_cohort(num_clients)
        beta, f = self.options.beta, self.options.f
        if f is not None and _trim_count(beta, num_clients) < f:
            raise FLError(
                f"trimmed_mean with f={f} needs beta >= f/n = {f}/{num_clients} = {f / num_clients:.4g} "
                f"to trim every Byzantine value, got beta={beta} with {num_clients} updates per round"
            )

    def combine(self, params: Params, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        trim = _trim_count(self.options.beta, next(iter(values.values())).shape[0])
        return {name: _coordinate_trimmed_mean(v, trim) for name, v in values.items()}


def _client_rows(values: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Each client's tensors flattened into one row: [n, total size]."""
    return torch.cat([v.reshape(v.shape[0], -1) for v in values.values()], dim=1)


def _split_row(row: torch.Tensor, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`_client_rows` for one row."""
    sizes = [math.prod(v.shape[1:]) for v in values.values()]
    chunks = torch.split(row, sizes)
    return {name: chunk.reshape(v.shape[1:]) for (name, v), chunk in zip(values.items(), chunks, strict=True)}


def _pairwise_squared_distances(rows: torch.Tensor) -> torch.Tensor:
    """[n, n] squared Euclidean distances from exact differences (no Gram-matrix cancellation)."""
    return torch.stack([(rows - row).pow(2).sum(1) for row in rows])


def _krum_scores(distances: torch.Tensor, neighbours: int) -> torch.Tensor:
    """Each update's sum of squared distances to its ``neighbours`` nearest other updates."""
    nearest = torch.sort(distances, dim=1).values[:, 1 : neighbours + 1]  # column 0: the update itself
    return nearest.sum(1)


def _lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` lowest scores, ties to the lower index."""
    return torch.sort(scores, stable=True).indices[:count]


def _mean_of_rows(values: Mapping[str, torch.Tensor], indices: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per tensor, the mean over the selected clients (in canonical order)."""
    chosen = torch.sort(indices).values
    return {name: v.index_select(0, chosen).mean(0) for name, v in values.items()}


def _require_krum_cohort(rule: str, f: int, n: int) -> None:
    if n <= 2 * f + 2:
        raise FLError(f"{rule} with f={f} needs more than 2f+2 = {2 * f + 2} updates per round, got {n}")


class Krum(_RobustRule):
    """Krum (Blanchard et al. 2017): the one update with the lowest score. Unweighted.

    An update's score is the sum of its squared distances to its n - f - 2 nearest other updates.
    Option ``f`` (required); needs n > 2f + 2.
    """

    name: ClassVar[str] = "krum"
    Options: ClassVar[type[Options]] = KrumOptions

    def check_cohort(self, num_clients: int) -> None:
        _require_krum_cohort(self.name, self.options.f, num_clients)

    def combine(self, params: Params, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        distances = _pairwise_squared_distances(_client_rows(values))
        n = distances.shape[0]
        return _mean_of_rows(values, _lowest(_krum_scores(distances, n - self.options.f - 2), 1))


class MultiKrum(_RobustRule):
    """Multi-Krum (Blanchard et al. 2017): the mean of the ``m`` updates with the lowest Krum scores.

    Unweighted.

    Options ``f`` (required) and ``m`` (default n - f); needs n > 2f + 2 and m <= n.
    """

    name: ClassVar[str] = "multikrum"
    Options: ClassVar[type[Options]] = MultiKrumOptions

    def check_cohort(self, num_clients: int) -> None:
        _require_krum_cohort(self.name, self.options.f, num_clients)
        m = self.options.m
        if m is not None and m > num_clients:
            raise FLError(f"multikrum with m={m} needs at least m updates per round, got {num_clients}")

    def combine(self, params: Params, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        distances = _pairwise_squared_distances(_client_rows(values))
        n, f = distances.shape[0], self.options.f
        selected = self.options.m if self.options.m is not None else n - f
        return _mean_of_rows(values, _lowest(_krum_scores(distances, n - f - 2), selected))


def _iterated_krum(distances: torch.Tensor, f: int, count: int) -> torch.Tensor:
    """Bulyan's selection: Krum applied ``count`` times, each time to the updates not selected yet.

    On r remaining updates Krum scores with r - f - 2 neighbours, at least 1 (the last picks of f <= 1).
    """
    remaining = torch.arange(distances.shape[0], device=distances.device)
    selected = []
    for _ in range(count):
        r = remaining.numel()
        among = distances[remaining][:, remaining]
        best = _lowest(_krum_scores(among, max(1, r - f - 2)), 1)
        selected.append(remaining[best])
        remaining = remaining[torch.arange(r, device=remaining.device) != best]
    return torch.cat(selected)


class Bulyan(_RobustRule):
    """Bulyan (El Mhamdi et al. 2018) over Krum. Unweighted.

    Selects θ = n - 2f updates by iterated Krum, then per coordinate averages the β = θ - 2f selected values
    closest to their median. Option ``f`` (required); needs n >= 4f + 3.
    """

    name: ClassVar[str] = "bulyan"
    Options: ClassVar[type[Options]] = KrumOptions

    def check_cohort(self, num_clients: int) -> None:
        f = self.options.f
        if num_clients < 4 * f + 3:
            raise FLError(
                f"bulyan with f={f} needs at least 4f+3 = {4 * f + 3} updates per round, got {num_clients}"
            )

    def combine(self, params: Params, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        distances = _pairwise_squared_distances(_client_rows(values))
        n, f = distances.shape[0], self.options.f
        selected = torch.sort(_iterated_krum(distances, f, n - 2 * f)).values
        keep = n - 4 * f  # β = θ - 2f
        return {
            name: _mean_closest_to_median(v.index_select(0, selected), keep) for name, v in values.items()
        }


def _clipped_step(rows: torch.Tensor, center: torch.Tensor, tau: float) -> torch.Tensor:
    """``center + mean_i (x_i - center) * min(1, tau / ||x_i - center||)``."""
    offsets = rows - center
    scale = (tau / torch.linalg.vector_norm(offsets, dim=1)).clamp(max=1.0)
    return center + (offsets * scale.unsqueeze(1)).mean(0)


class CenteredClipping(_RobustRule):
    """Centered clipping (Karimireddy et al. 2021), starting from the current global params. Unweighted.

    Repeats ``iterations`` times (L, default 1): each update's offset from the center is clipped to norm
    ``tau`` (required) over all tensors together, and the center moves by the mean clipped offset.
    """

    name: ClassVar[str] = "centered_clipping"
    Options: ClassVar[type[Options]] = CenteredClippingOptions

    def combine(self, params: Params, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rows = _client_rows(values)
        center = torch.cat([params[name].reshape(-1) for name in values]).to(rows.device, torch.float64)
        for _ in range(self.options.iterations):
            center = _clipped_step(rows, center, self.options.tau)
        return _split_row(center, values)
