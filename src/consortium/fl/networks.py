"""The classifier's network as pure functions of named tensors: an optional convolutional stack, then an MLP.

``layout`` lists the layers (names, shapes, fan-in); ``init_params`` draws them like PyTorch's own modules
(uniform in ±1/sqrt(fan_in)); ``forward`` computes logits from flat feature rows with ``torch.nn.functional``
only, so the same function runs for one client, under ``torch.func.vmap`` for a stacked cohort, and on any
device. Parameter names: ``conv.{i}.weight``/``.bias`` for the convolutions, ``layers.{2j}.weight``/``.bias``
for the linear layers (the names ``nn.Sequential`` gives an MLP, unchanged from the MLP-only classifier).

A convolution block is ``Conv2d(kernel, padding kernel // 2) -> activation -> MaxPool2d(pool)``; rows are
reshaped from ``[n, C*H*W]`` to ``[n, C, H, W]`` first (row-major, as ``x.reshape`` and NumPy do).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

from consortium.fl.core import FLError, Params

Activation = Literal["relu", "tanh", "gelu", "sigmoid"]
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "gelu": F.gelu,
    "sigmoid": torch.sigmoid,
}


Side = Annotated[int, Field(le=4096)]
"""A channel count or an image side (>= 1, checked below): bounded, so an example's activations stay small."""


class ConvSpec(BaseModel):
    """A stack of convolution blocks in front of the MLP head."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_shape: tuple[Side, Side, Side] = Field(description="channels, height, width of one example")
    channels: list[Side] = Field(max_length=32, description="output channels of each convolution block")
    kernel_size: int = Field(3, ge=1, le=31, description="odd square kernel; padding keeps height and width")
    pool: int = Field(2, ge=1, le=64, description="max-pooling window and stride after each block (1: none)")

    @field_validator("input_shape")
    @classmethod
    def _positive_shape(cls, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(side < 1 for side in shape):
            raise ValueError(f"every side must be >= 1, got {list(shape)}")
        return shape

    @field_validator("channels")
    @classmethod
    def _channels(cls, channels: list[int]) -> list[int]:
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"needs one or more channel counts, each >= 1, got {channels}")
        return channels

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, kernel: int) -> int:
        if kernel % 2 == 0:
            raise ValueError(f"must be odd so that padding keeps the size, got {kernel}")
        return kernel

    @property
    def input_features(self) -> int:
        return math.prod(self.input_shape)

    def output_shape(self) -> tuple[int, int, int]:
        """Channels, height, width after the last block; FLError when pooling shrinks a side to 0."""
        _, height, width = self.input_shape
        for _ in self.channels:
            height, width = height // self.pool, width // self.pool
        if height < 1 or width < 1:
            raise FLError(
                f"conv: {len(self.channels)} pooling steps of {self.pool} shrink the "
                f"{self.input_shape[1]}x{self.input_shape[2]} input to nothing"
            )
        return self.channels[-1], height, width


@dataclass(frozen=True)
class Layer:
    """One weighted layer: its tensor names and shapes, and its fan-in (for initialisation)."""

    kind: Literal["conv", "linear"]
    weight: str
    bias: str
    weight_shape: tuple[int, ...]
    bias_shape: tuple[int, ...]
    fan_in: int


def layout(layers: list[int], conv: ConvSpec | None = None) -> list[Layer]:
    """The layers of a classifier whose ``layers`` are input features, hidden widths..., classes."""
    if len(layers) < 2:
        raise FLError(f"layers needs at least the input features and the classes, got {layers}")
    result: list[Layer] = []
    head_in = layers[0]
    if conv is not None:
        if layers[0] != conv.input_features:
            raise FLError(
                f"layers[0] ({layers[0]}) must equal the number of input features of conv.input_shape "
                f"{list(conv.input_shape)} ({conv.input_features})"
            )
        in_channels, k = conv.input_shape[0], conv.kernel_size
        for i, out_channels in enumerate(conv.channels):
            result.append(
                Layer(
                    "conv",
                    f"conv.{i}.weight",
                    f"conv.{i}.bias",
                    (out_channels, in_channels, k, k),
                    (out_channels,),
                    in_channels * k * k,
                )
            )
            in_channels = out_channels
        head_in = math.prod(conv.output_shape())
    widths = [head_in, *layers[1:]]
    for j, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        result.append(
            Layer(
                "linear",
                f"layers.{2 * j}.weight",
                f"layers.{2 * j}.bias",
                (fan_out, fan_in),
                (fan_out,),
                fan_in,
            )
        )
    return result


def param_names(network: list[Layer]) -> list[str]:
    """Weight and bias names in forward order."""
    return [name for layer in network for name in (layer.weight, layer.bias)]


def init_params(network: list[Layer], generator: torch.Generator) -> Params:
    """Float32 tensors drawn uniformly in ±1/sqrt(fan_in), layer by layer, weight before bias."""
    params: Params = {}
    for layer in network:
        bound = 1.0 / math.sqrt(layer.fan_in)
        params[layer.weight] = torch.empty(layer.weight_shape).uniform_(-bound, bound, generator=generator)
        params[layer.bias] = torch.empty(layer.bias_shape).uniform_(-bound, bound, generator=generator)
    return params


def forward(
    network: list[Layer],
    activation: str,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    conv: ConvSpec | None = None,
) -> torch.Tensor:
    """Logits ``[n, classes]`` of flat feature rows ``x`` ``[n, features]``."""
    act = ACTIVATIONS[activation]
    linear = [layer for layer in network if layer.kind == "linear"]
    if conv is not None:
        x = x.reshape(x.shape[0], *conv.input_shape)
        for layer in network:
            if layer.kind != "conv":
                continue
            x = act(F.conv2d(x, params[layer.weight], params[layer.bias], padding=conv.kernel_size // 2))
            if conv.pool > 1:
                x = F.max_pool2d(x, conv.pool)
        x = x.flatten(1)
    last = len(linear) - 1
    for i, layer in enumerate(linear):
        x = F.linear(x, params[layer.weight], params[layer.bias])
        if i < last:
            x = act(x)
    return x
