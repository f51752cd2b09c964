"""Wire schema of a project's contribution valuation (kept out of :mod:`consortium.protocol`, which imports
it). docs/incentives.md explains the measures."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_VALUED_PERMUTATIONS = 10_000


class ValuationSpec(BaseModel):
    """How the hub values each org's contribution to a run: after each round, off the round's critical path,
    on the project's hub-side test set."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    method: Literal["gtg-shapley", "leave-one-out", "exact-shapley"] = "gtg-shapley"
    metric: str | None = Field(default=None, min_length=1, max_length=100,
                               description="the test metric a coalition is worth (default: the algorithm's)")
    higher_is_better: bool = Field(default=True, description="with metric: whether a higher value is better")
    max_permutations: int = Field(default=500, ge=1, le=MAX_VALUED_PERMUTATIONS,
                                  description="GTG-Shapley's bound on sampled permutations per round")
