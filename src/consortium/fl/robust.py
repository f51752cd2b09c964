"""Robust aggregation rules: they bound the influence of a few arbitrary (Byzantine) updates.

Krum, Multi-Krum, coordinate-wise median and trimmed mean, Bulyan and centered clipping are unweighted: every
update counts once, whatever its ``num_examples``. They read the update tensors as given; for a classifier
these are local models, and distances between local models equal distances between their deltas from the
common global params. Like every strategy they are pure and independent of the order of the updates (see
:mod:`consortium.fl.strategies`).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping
from fractions import Fraction
from typing import ClassVar

import torch
from pydantic import Field, field_validator

from consortium.fl.core import FLError, Options, Params, StackedUpdates, parse_options
from consortium.fl.strategies import StackingStrategy, cast_like, check_shapes, shapes_of

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


class _RobustRule(StackingStrategy):
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
        check_shapes(stacked.tensors, shapes_of(params), "the updates", leading_dims=1)
        self.check_cohort(len(stacked))
        values = {name: stacked.tensors[name].to(torch.float64) for name in params}
        combined = self.combine(params, values)
        return {name: cast_like(combined[name], current) for name, current in params.items()}

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
