"""A real run's round of secure aggregation, set up from the project spec: who takes part, the threshold,
the neighbour graph and the quantiser, as one :class:`RoundSetup` message the hub hands every node.

The run's spec (:class:`~consortium.privacy_wire.SecureAggregationSpec`) is checked once, at proposal time,
by :func:`check_spec`; each round's setup is fixed by :func:`plan_round` from the nodes that trained."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import Field

from consortium.fl.core import FLError, derive_seed
from consortium.fl.privacy.secagg.errors import SecAggAborted
from consortium.fl.privacy.secagg.messages import SecAggConfig, Strict
from consortium.fl.privacy.secagg.quantise import MODULUS_BITS, Quantiser
from consortium.fl.privacy.spec import NEEDS_INDIVIDUAL_UPDATES_RULE
from consortium.privacy_wire import SecureAggregationSpec


class RoundSetup(Strict):
    """Stage 0, server to clients: the round's configuration and how inputs are quantised."""

    config: SecAggConfig
    clip_range: float = Field(gt=0, le=1e6)
    bits: int = Field(ge=1, le=MODULUS_BITS)

    def quantiser(self) -> Quantiser:
        return Quantiser(self.clip_range, self.bits)


def threshold(spec: SecureAggregationSpec, clients: int) -> int:
    """The round's t for ``clients`` nodes: the spec's (absolute or fraction), never at or below half of a
    client's neighbourhood (the protocol's own floor)."""
    neighbourhood = clients if spec.neighbours is None else min(spec.neighbours + 1, clients)
    floor = neighbourhood // 2 + 1
    if spec.threshold is not None:
        return max(spec.threshold, floor)
    if spec.threshold_fraction is not None:
        return max(math.ceil(spec.threshold_fraction * clients - 1e-9), floor)
    return floor


def check_spec(spec: SecureAggregationSpec, sources: int, strategy_name: str, linear: bool,
               uses_scaffold: bool, noise: str | None) -> None:
    """FLError naming the spec field unless a run of ``sources`` data sources can aggregate securely."""
    if not linear:
        raise FLError(f"strategy.name: {strategy_name!r} needs individual updates ({NEEDS_INDIVIDUAL_UPDATES_RULE}); "
                      "use a linear rule such as fedavg")
    if uses_scaffold:
        raise FLError("strategy.secure_aggregation: SCAFFOLD's control variates cannot be summed securely yet")
    if noise == "central":
        raise FLError("privacy.noise: central noise needs the hub to clip each update, which secure aggregation "
                      "hides; use 'distributed' (or 'local')")
    if spec.neighbours is not None and spec.neighbours % 2 and spec.neighbours < sources - 1:
        raise FLError(f"strategy.secure_aggregation.neighbours: {spec.neighbours} must be even (or at least "
                      f"{sources - 1}, every other node)")
    if sources < 2 or threshold(spec, sources) > sources:
        raise FLError(f"strategy.secure_aggregation.threshold: {threshold(spec, sources)} exceeds the "
                      f"{sources} data sources of the project (at least 2 are needed)")
    if spec.bits is not None and sources > Quantiser(spec.clip_range, spec.bits).max_inputs:
        raise FLError(f"strategy.secure_aggregation.bits: the sum of {sources} inputs of {spec.bits} bits can "
                      f"overflow 2^{MODULUS_BITS}; use at most {MODULUS_BITS - (sources - 1).bit_length()}")


def plan_round(spec: SecureAggregationSpec, round_id: int, clients: Sequence[str], vector_length: int,
               run_seed: int) -> RoundSetup:
    """The setup of round ``round_id`` among ``clients``; SecAggAborted when they are fewer than t."""
    t = threshold(spec, len(clients))
    if len(clients) < max(t, 2):
        raise SecAggAborted("setup", len(clients), max(t, 2), "nodes that trained")
    degree = spec.neighbours if spec.neighbours is not None and spec.neighbours < len(clients) - 1 else None
    config = SecAggConfig(round=round_id, clients=list(clients), threshold=t, vector_length=vector_length,
                          degree=degree, graph_seed=derive_seed("secagg-graph", run_seed, round_id))
    bits = spec.bits or Quantiser.for_inputs(spec.clip_range, len(clients)).bits
    return RoundSetup(config=config, clip_range=spec.clip_range, bits=bits)
