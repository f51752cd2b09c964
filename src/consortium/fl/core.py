"""The fl core's contracts: parameters, updates, algorithms and strategies.

Everything here is pure: no I/O, no clocks, no global random state. The hub, the node and the simulator
all call the same functions, so a simulated run and a real run execute the same math.

An *algorithm* (NN classifier, k-means, GAN, RL policy...) knows how to initialise global parameters, how a
client turns global parameters plus its local data into an :class:`Update`, and how to evaluate parameters on
local data. A *strategy* turns the current global parameters and a set of updates into the next global
parameters. Both are looked up by name in :mod:`consortium.fl.registry` so that a project spec (JSON) can
name them.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from consortium.fl.environments import LocalEnvironment

Params = dict[str, torch.Tensor]
"""Named tensors: the global model (or any state the server keeps for an algorithm)."""


class FLError(ValueError):
    """A bad spec, bad data or a bad update; the message is meant for the person who caused it."""


@dataclass(frozen=True)
class TensorSpec:
    """Name-independent description of one tensor: its shape and dtype."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @classmethod
    def of(cls, tensor: torch.Tensor) -> TensorSpec:
        return cls(tuple(tensor.shape), tensor.dtype)


def spec_of(params: Mapping[str, torch.Tensor]) -> dict[str, TensorSpec]:
    """The template (names, shapes, dtypes) of a set of named tensors."""
    return {name: TensorSpec.of(t) for name, t in params.items()}


@dataclass(frozen=True)
class Update:
    """What one client sends back after local work.

    ``tensors`` follow the algorithm's :meth:`Algorithm.update_template` (the new local params for a
    classifier, per-centroid sums and counts for k-means...). ``num_examples`` weighs the update.
    """

    tensors: dict[str, torch.Tensor]
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    client_id: str = ""


@dataclass(frozen=True)
class Evaluation:
    """Metrics of some params on one client's (or the hub's) data."""

    num_examples: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class LocalData:
    """A client's local examples as tensors. ``y`` is None for unsupervised algorithms."""

    x: torch.Tensor
    y: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


MAX_LAYER_WIDTH = 1 << 20
"""Units of one layer (an input layer may be a flattened image)."""
MAX_MODEL_PARAMS = 1 << 26
"""Parameters of one model: 256 MiB of float32, four times the hub's default upload limit."""
MAX_BATCH_SIZE = 1 << 16
MAX_EPOCHS = 10_000
MAX_STEPS = 1 << 20
"""Local steps (or environment steps) of one client in one round."""

Width = Annotated[int, Field(ge=1, le=MAX_LAYER_WIDTH)]
BatchSize = Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)]
Epochs = Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]


def check_widths(widths: Sequence[int]) -> None:
    """ValueError when a layer is wider than :data:`MAX_LAYER_WIDTH` (list validators check >= 1 first)."""
    widest = max(widths, default=0)
    if widest > MAX_LAYER_WIDTH:
        raise ValueError(f"a layer width of {widest:,} exceeds the limit of {MAX_LAYER_WIDTH:,}")


def check_model_size(field: str, num_params: int) -> None:
    """ValueError naming ``field`` when ``num_params`` exceeds :data:`MAX_MODEL_PARAMS`."""
    if num_params > MAX_MODEL_PARAMS:
        raise ValueError(
            f"{field}: these widths make a model of {num_params:,} parameters; "
            f"the limit is {MAX_MODEL_PARAMS:,}"
        )


def dense_params(widths: Sequence[int]) -> int:
    """Parameters (weights and biases) of a chain of fully connected layers of these widths."""
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in itertools.pairwise(widths))


class HyperParams(BaseModel):
    """Base for an algorithm's hyper-parameters: unknown keys are an error, not silently ignored; every
    float is finite. Sizes are bounded (:data:`MAX_LAYER_WIDTH`, :data:`MAX_MODEL_PARAMS`...), so that an
    absurd spec is refused at proposal instead of failing its run."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Options(BaseModel):
    """Base for the options of a strategy or a server optimiser: unknown keys are an error; floats finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@runtime_checkable
class Algorithm(Protocol):
    """One federated learning family. Implementations are stateless; all state lives in Params/Updates.

    What an algorithm may do beyond this (cohort training, SCAFFOLD, previews, bounds and value checks on
    updates) is declared as protocols in :mod:`consortium.fl.capabilities`.
    """

    name: ClassVar[str]
    HyperParams: ClassVar[type[HyperParams]]
    default_strategy: ClassVar[str]
    needs_client_init: ClassVar[bool]
    """True when the initial params come from clients (k-means seeding) rather than from :meth:`init`."""
    trains_in_environments: ClassVar[bool]
    """True when clients hold a :class:`LocalEnvironment` rather than rows of data (RL)."""

    def init(self, hp: Any, num_features: int, seed: int) -> Params: ...

    def client_init(self, hp: Any, data: LocalData, seed: int) -> Update: ...

    def init_from_updates(self, hp: Any, updates: Sequence[Update], seed: int) -> Params: ...

    def client_init_template(self, hp: Any, num_features: int) -> dict[str, TensorSpec]: ...

    def update_template(self, hp: Any, params: Params) -> dict[str, TensorSpec]: ...

    def local_update(
        self, hp: Any, params: Params, data: LocalData | LocalEnvironment, seed: int
    ) -> Update: ...

    def evaluate(self, hp: Any, params: Params, data: LocalData | LocalEnvironment) -> Evaluation: ...


class ServerInitialised:
    """Mixin for an algorithm whose initial params come from :meth:`init` on the server, and whose updates
    carry new local params shaped like the global ones (classifier, GAN, RL policy)."""

    name: ClassVar[str]
    needs_client_init: ClassVar[bool] = False
    trains_in_environments: ClassVar[bool] = False

    def client_init(self, hp: Any, data: LocalData, seed: int) -> Update:
        raise FLError(f"the {self.name} algorithm is initialised by the server (init), not by clients")

    def init_from_updates(self, hp: Any, updates: Sequence[Update], seed: int) -> Params:
        raise FLError(f"the {self.name} algorithm is initialised by the server (init), not from client updates")

    def client_init_template(self, hp: Any, num_features: int) -> dict[str, TensorSpec]:
        raise FLError(f"the {self.name} algorithm is initialised by the server (init), not by clients")

    def update_template(self, hp: Any, params: Params) -> dict[str, TensorSpec]:
        """An update carries new local params: the same names, shapes and dtypes as ``params``."""
        return spec_of(params)


@dataclass(frozen=True)
class StackedUpdates:
    """C clients' updates, each tensor stacked on a leading client axis, in canonical (client id) order."""

    tensors: dict[str, torch.Tensor]
    """name -> [C, *shape]"""
    num_examples: torch.Tensor
    """[C] float64, on the same device as the tensors"""
    client_ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.client_ids)


TOTAL_WEIGHT = "__total_weight__"
"""Reserved tensor name: the summed weight of the updates in a linear strategy's partial aggregate."""


@runtime_checkable
class Strategy(Protocol):
    """Server-side aggregation: pure and independent of the order of ``updates``.

    A strategy that also takes the updates stacked says so by being a
    :class:`~consortium.fl.capabilities.StackedAggregator` (every built-in one is); then
    ``aggregate(params, updates)`` equals ``aggregate_stacked(params, stack_updates(updates))``.
    """

    name: ClassVar[str]
    linear: ClassVar[bool]
    """True for rules that are a weighted sum of the updates and so can be reduced in chunks."""

    def check_cohort(self, num_clients: int) -> None:
        """Raise FLError with the reason when the rule cannot aggregate ``num_clients`` updates."""
        ...

    def aggregate(self, params: Params, updates: Sequence[Update]) -> Params: ...


@runtime_checkable
class LinearStrategy(Strategy, Protocol):
    """A strategy whose aggregate is ``finish`` of a sum of per-chunk ``partial`` results.

    ``partial`` returns float64 sums plus the total weight under :data:`TOTAL_WEIGHT`; it is additive:
    ``partial(A ∪ B) == merge_partials(partial(A), partial(B))`` up to float64 rounding.
    """

    def partial(self, stacked: StackedUpdates) -> Params: ...

    def finish(self, params: Params, partial: Params) -> Params: ...


@runtime_checkable
class WeightedSumsStrategy(LinearStrategy, Protocol):
    """A linear strategy whose ``partial`` is the example-weighted sum of the updates (FedAvg): the simulator
    may then hand it ``sum_i n_i t_i`` computed directly, without the clients' params (the one-step fold)."""

    def partial_of_weighted_sums(self, sums: Params, total_weight: torch.Tensor) -> Params: ...


def _validated(schema: type[BaseModel], raw: Mapping[str, Any], what: str) -> Any:
    """``schema`` filled from ``raw``; FLError naming ``what`` and each bad field otherwise."""
    try:
        return schema.model_validate(dict(raw))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        )
        raise FLError(f"{what}: {problems}") from exc


def parse_hyperparams(algorithm: Algorithm, raw: Mapping[str, Any]) -> Any:
    """Validate a JSON dict of hyper-parameters against the algorithm's schema (FLError on failure)."""
    return _validated(algorithm.HyperParams, raw, f"bad hyper-parameters for {algorithm.name!r}")


def parse_options(schema: type[Options], raw: Mapping[str, Any], owner: str) -> Any:
    """Validate the options of a strategy or server optimiser (``owner``, e.g. "strategy 'krum'")."""
    return _validated(schema, raw, f"bad options for {owner}")


MAX_ABS_VALUE = 1e15
"""The largest magnitude the hub accepts in an update tensor (a node's upload with more is refused).

Grounded in the float32 arithmetic the hub runs on accepted values: the product of two values at the ceiling
summed over a layer's fan-in of up to 3.4e8 inputs (1e30 x 3.4e8 = float32's largest, 3.4e38), and the square
of the difference of two of them, (2e15)^2 = 4e30, summed over 8.5e7 elements, stay finite. So the aggregate
cast back to the params' float32, a server optimiser's step, squared update distances and one linear layer
of the hub's test evaluation cannot overflow because of one upload, and no value comes near the float32
maximum (3e38 uploads made the hub's evaluation, and then its ledger entry, non-finite). Honest values sit
far below it: weights are O(1..100), k-means sums are rows x feature scale (1e9 rows of features up to 1e6).
Several layers of huge weights can still overflow in evaluation; the hub then records the metric as
diverged (``RoundMetrics.diverged``) instead of failing the run."""


def check_update(template: Mapping[str, TensorSpec], tensors: Mapping[str, torch.Tensor]) -> None:
    """Raise FLError unless ``tensors`` match ``template`` exactly (names, shapes, dtypes), are finite and
    within +-:data:`MAX_ABS_VALUE` (one min/max pass per tensor)."""
    missing = sorted(set(template) - set(tensors))
    extra = sorted(set(tensors) - set(template))
    if missing or extra:
        raise FLError(f"update tensors differ from the model: missing {missing}, unexpected {extra}")
    for name, spec in template.items():
        t = tensors[name]
        if tuple(t.shape) != spec.shape:
            raise FLError(f"tensor {name!r} has shape {tuple(t.shape)}, expected {spec.shape}")
        if t.dtype != spec.dtype:
            raise FLError(f"tensor {name!r} has dtype {t.dtype}, expected {spec.dtype}")
        if t.dtype == torch.bool or t.is_complex() or t.numel() == 0:
            continue
        low, high = (float(v) for v in torch.aminmax(t))
        if not (math.isfinite(low) and math.isfinite(high)):  # aminmax propagates NaN
            raise FLError(f"tensor {name!r} contains non-finite values (NaN or inf)")
        if max(-low, high) > MAX_ABS_VALUE:
            raise FLError(
                f"tensor {name!r} has a value of magnitude {max(-low, high):.3g}, above the hub's ceiling "
                f"{MAX_ABS_VALUE:g}"
            )


def check_num_examples(num_examples: int, limit: int, what: str, why: str = "") -> None:
    """FLError unless ``1 <= num_examples <= limit`` (``what``: the answer; ``why``: where ``limit`` is from)."""
    if not 1 <= num_examples <= limit:
        raise FLError(f"{what}: num_examples = {num_examples} is outside [1, {limit}]" + (f" ({why})" if why else ""))


def derive_seed(*parts: object) -> int:
    """A 63-bit seed derived from any parts (project seed, round, client id...), stable across processes."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def weighted_metrics(evaluations: Sequence[Evaluation]) -> Evaluation:
    """Example-weighted mean of each metric over several evaluations (federated evaluation)."""
    total = sum(e.num_examples for e in evaluations)
    if total == 0:
        return Evaluation(0, {})
    keys = sorted({k for e in evaluations for k in e.metrics})
    merged = {}
    for key in keys:
        pairs = [(e.metrics[key], e.num_examples) for e in evaluations if key in e.metrics]
        weight = sum(n for _, n in pairs)
        value = sum(v * n for v, n in pairs) / weight if weight else math.nan
        merged[key] = float(value)
    return Evaluation(total, merged)


def finite_metrics(metrics: Mapping[str, float], scope: str) -> tuple[dict[str, float], list[str]]:
    """The finite ``metrics``, and the names (as ``scope.name``) of those that are NaN or infinite, so that
    a diverged model's metrics can be recorded without putting NaN into JSON."""
    kept, diverged = {}, []
    for name, value in metrics.items():
        if math.isfinite(value):
            kept[name] = float(value)
        else:
            diverged.append(f"{scope}.{name}")
    return kept, diverged


def sorted_updates(updates: Sequence[Update]) -> list[Update]:
    """Updates in a canonical order (by client id), so float sums do not depend on arrival order."""
    return sorted(updates, key=lambda u: u.client_id)


def _client_label(update: Update) -> str:
    return update.client_id or "an unnamed client"


def _expected_shapes(
    update: Update, shapes: Mapping[str, tuple[int, ...]] | None
) -> dict[str, tuple[int, ...]]:
    if shapes is not None:
        return dict(shapes)
    return {name: tuple(t.shape) for name, t in update.tensors.items()}


def _check_stackable(
    update: Update, first: Update, shapes: Mapping[str, tuple[int, ...]], exact_names: bool
) -> None:
    """FLError naming the client unless ``update`` carries every tensor of ``shapes`` with its shape."""
    if exact_names and set(update.tensors) != set(shapes):
        raise FLError(
            f"the update from {_client_label(update)} has tensors {sorted(update.tensors)}, "
            f"the update from {_client_label(first)} has {sorted(shapes)}"
        )
    for name, shape in shapes.items():
        if name not in update.tensors:
            raise FLError(f"the update from {_client_label(update)} has no tensor {name!r}")
        got, want = tuple(update.tensors[name].shape), tuple(shape)
        if got != want:
            raise FLError(f"tensor {name!r} from {_client_label(update)} has shape {got}, expected {want}")
    if update.num_examples < 0:
        raise FLError(
            f"the update from {_client_label(update)} has a negative number of examples "
            f"({update.num_examples})"
        )


def stack_updates(
    updates: Sequence[Update], shapes: Mapping[str, tuple[int, ...]] | None = None
) -> StackedUpdates:
    """The updates in canonical order (:func:`sorted_updates`), each tensor stacked on a leading client axis.

    With ``shapes`` (name -> per-client shape), exactly those tensors are stacked and other tensors an update
    carries are left out; without, every update must carry the same tensors with the shapes of the first.
    FLError naming the client when an update does not fit.
    """
    if not updates:
        raise FLError("there are no updates to stack")
    ordered = sorted_updates(updates)
    expected = _expected_shapes(ordered[0], shapes)
    for update in ordered:
        _check_stackable(update, ordered[0], expected, exact_names=shapes is None)
    tensors = {name: torch.stack([u.tensors[name] for u in ordered]) for name in expected}
    device = next(iter(tensors.values())).device if tensors else None
    num_examples = torch.tensor([float(u.num_examples) for u in ordered], dtype=torch.float64, device=device)
    return StackedUpdates(tensors, num_examples, tuple(u.client_id for u in ordered))


def merge_partials(a: Params, b: Params) -> Params:
    """The partial aggregate of two disjoint sets of updates: the elementwise sum of their partials."""
    if set(a) != set(b):
        raise FLError(f"the partials hold different tensors: {sorted(set(a) ^ set(b))}")
    for name in a:
        if a[name].shape != b[name].shape:
            raise FLError(
                f"partial tensor {name!r} has shapes {tuple(a[name].shape)} and {tuple(b[name].shape)}"
            )
    return {name: a[name] + b[name] for name in a}
