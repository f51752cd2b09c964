"""The classifier's hyper-parameters: architecture and local-training settings, with their validators."""

from __future__ import annotations

import functools
import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from consortium.fl import networks
from consortium.fl.core import BatchSize, Epochs, FLError, check_model_size, check_widths
from consortium.fl.core import HyperParams as BaseHyperParams
from consortium.fl.networks import ConvSpec


class ClassifierHyperParams(BaseHyperParams):
    """Architecture and local-training settings of the classifier (an MLP, optionally behind convolutions)."""

    layers: list[int] = Field(
        max_length=64,
        description="Layer widths: number of input features, hidden widths..., number of classes.",
    )
    conv: ConvSpec | None = Field(
        None,
        description="Convolution blocks in front of the MLP (rows are reshaped to conv.input_shape); "
        "layers[0] is then the number of input features, channels x height x width",
    )
    activation: Literal["relu", "tanh", "gelu", "sigmoid"] = "relu"
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    proximal_mu: float = Field(
        0.0, ge=0, description="FedProx: weight of the proximal term (mu/2)||w - w_global||^2 in local training."
    )
    scaffold: bool = Field(
        False,
        description="SCAFFOLD: correct every local gradient with control variates (c - c_i); needs plain "
        "SGD (optimizer 'sgd', momentum 0)",
    )
    local_epochs: Epochs = 1
    batch_size: BatchSize = 32

    @field_validator("layers")
    @classmethod
    def _check_layers(cls, layers: list[int]) -> list[int]:
        if len(layers) < 2:
            raise ValueError("needs at least 2 entries: number of input features and number of classes")
        if any(width < 1 for width in layers):
            raise ValueError(f"every layer width must be >= 1, got {layers}")
        check_widths(layers)
        return layers

    @model_validator(mode="after")
    def _conv_fits_the_layers(self) -> ClassifierHyperParams:
        try:
            network = networks.layout(self.layers, self.conv)
        except FLError as exc:
            raise ValueError(str(exc)) from None
        sizes = (math.prod(layer.weight_shape) + math.prod(layer.bias_shape) for layer in network)
        check_model_size("layers" if self.conv is None else "layers and conv", sum(sizes))
        return self

    @model_validator(mode="after")
    def _scaffold_needs_plain_sgd(self) -> ClassifierHyperParams:
        if self.scaffold and (self.optimizer != "sgd" or self.momentum):
            raise ValueError(
                "scaffold needs optimizer 'sgd' with momentum 0: its control variates estimate the gradient "
                "as (x - y) / (K * lr), which holds for plain SGD steps only"
            )
        return self

    @property
    def num_classes(self) -> int:
        return self.layers[-1]

    @functools.cached_property
    def network(self) -> list[networks.Layer]:
        """The layers (computed once per hyper-parameter object: the forward pass reads it every step)."""
        return networks.layout(self.layers, self.conv)

    @functools.cached_property
    def param_names(self) -> list[str]:
        return networks.param_names(self.network)
