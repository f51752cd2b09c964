"""Wire schema of a project's privacy settings (kept out of :mod:`consortium.protocol`, which imports it).

Every field is bounded; a bad value is refused by pydantic with the field's name (a 422 at the hub)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator


class _Wire(BaseModel):
    """:class:`consortium.protocol.Wire`'s settings (that module imports this one): unknown keys refused,
    floats finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class AdaptiveClipSpec(_Wire):
    """Quantile-based adaptive clipping (Andrew et al., NeurIPS 2021): the clip norm follows a quantile of
    the clients' update norms, starting from ``PrivacySpec.clip``."""

    target_quantile: float = Field(default=0.5, ge=0.0, le=1.0)
    learning_rate: float = Field(default=0.2, gt=0.0, le=10.0)
    count_noise_std: float = Field(default=1.0, gt=0.0, le=1e6,
                                   description="noise on the clipped-count report; must exceed sigma / 2")


class PrivacySpec(_Wire):
    """Differential privacy of a project (docs/privacy.md): client-level DP-FedAvg with Gaussian noise, or
    sample-level DP-SGD in each node's local training (``mechanism = "dp_sgd"``, the classifier only).

    The noise multiplier is derived from (epsilon, delta), the rounds and the sampling by the accountant
    unless it is given explicitly (DP-FedAvg only: DP-SGD derives one per dataset from its rows); the model
    card then states the guarantee the run actually has."""

    mechanism: Literal["dp_fedavg", "dp_sgd"] = Field(
        default="dp_fedavg",
        description="dp_fedavg: each node's whole update is clipped and noised (protects a dataset); dp_sgd: "
        "each node trains with per-example clipping and noise (Opacus; protects each record)",
    )
    noise: Literal["local", "central", "distributed"] = Field(
        default="central",
        description="local: each node noises its own update; central: the hub noises the sum; distributed: "
        "each node adds a share of the noise under secure aggregation",
    )
    clip: float = Field(gt=0, le=1e6, description="L2 norm C every client update is clipped to")
    epsilon: float = Field(gt=0, le=1e3, description="target epsilon of the whole run")
    delta: float = Field(gt=0, lt=1, description="target delta of the whole run")
    noise_multiplier: float | None = Field(
        default=None, gt=0, le=1e6, exclude_if=lambda value: value is None,
        description="sigma; derived from epsilon and delta when left out",
    )
    sampling: Literal["poisson", "fixed_size"] = "poisson"
    adaptive_clip: AdaptiveClipSpec | None = Field(default=None, exclude_if=lambda value: value is None)

    @model_serializer(mode="wrap")
    def _without_client_level_fields(self, handler: SerializerFunctionWrapHandler):
        """Under DP-SGD, ``noise`` and ``sampling`` (client-level settings) are left out of the JSON. (No return
        annotation: with one, pydantic would publish the serialised form as a bare object in the OpenAPI.)"""
        data = handler(self)
        if self.mechanism == "dp_sgd":
            data.pop("noise", None)
            data.pop("sampling", None)
        return data

    @model_validator(mode="after")
    def _dp_sgd_fields(self) -> PrivacySpec:
        if self.mechanism != "dp_sgd":
            return self
        for name, why in (("noise", "DP-SGD noises every step's gradients on the node"),
                          ("sampling", "DP-SGD Poisson-samples each node's rows"),
                          ("noise_multiplier", "DP-SGD derives one per dataset from its rows"),
                          ("adaptive_clip", "DP-SGD clips each example at a fixed norm")):
            if name in self.model_fields_set:
                raise ValueError(f"{name} does not apply to mechanism 'dp_sgd' ({why}); leave it out")
        return self


class PrivacyBudgetSpec(_Wire):
    """A dataset owner's total (epsilon, delta) budget, over every DP run that will ever use the dataset; its
    node refuses a round that would pass it (docs/privacy.md, "Budgets")."""

    epsilon: float = Field(gt=0, le=1e3, description="total epsilon the owner allows")
    delta: float = Field(gt=0, lt=1, description="the delta the budget's epsilon is stated at")


class PrivacyCharge(_Wire):
    """What a node tells the hub it charged a dataset's budget for one round (before training)."""

    noise_multiplier: float = Field(gt=0, le=1e6)
    sampling_rate: float = Field(gt=0, le=1)
    steps: int = Field(default=1, ge=1, le=1_000_000, exclude_if=lambda value: value == 1,
                       description="sampled Gaussian steps in the round (DP-SGD's local steps; 1 for DP-FedAvg)")


class SecureAggregationSpec(_Wire):
    """SecAgg+ (docs/privacy.md): the hub sees only masked vectors and their sum. Each node's update delta
    is clipped per coordinate to ``[-clip_range, clip_range]`` and quantised to ``bits`` (derived from the
    number of nodes when left out); every update counts once in the mean (the hub cannot weigh what it
    cannot see)."""

    threshold: int | None = Field(
        default=None, ge=2, le=4096, exclude_if=lambda value: value is None,
        description="t: the fewest nodes that must survive every stage; default: just over half the nodes",
    )
    threshold_fraction: float | None = Field(
        default=None, gt=0.5, le=1.0, exclude_if=lambda value: value is None,
        description="t as a fraction of the round's nodes (rounded up), instead of threshold",
    )
    neighbours: int | None = Field(
        default=None, ge=2, le=4096, exclude_if=lambda value: value is None,
        description="k of the SecAgg+ k-regular graph; none: every node masks with every other one",
    )
    clip_range: float = Field(gt=0, le=1e6, description="R: each delta coordinate is clipped to [-R, R]")
    bits: int | None = Field(default=None, ge=1, le=32, exclude_if=lambda value: value is None,
                             description="quantisation bits; default: the most that cannot overflow")
    stage_timeout_s: float = Field(default=30.0, gt=0, le=3600, description="deadline of each of the 4 stages")

    @model_validator(mode="after")
    def _one_threshold(self) -> SecureAggregationSpec:
        if self.threshold is not None and self.threshold_fraction is not None:
            raise ValueError("give threshold or threshold_fraction, not both")
        return self
