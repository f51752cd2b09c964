"""Fixed-point quantisation of float vectors into Z_(2^32), the ring the masks live in.

A value is clipped to ``[-R, R]`` (``R`` = ``clip_range``) and mapped to an integer level in
``[0, 2^bits - 1]``: ``q = round((x + R) * scale)`` with ``scale = (2^bits - 1) / (2R)``, rounding to nearest
(ties to even) or stochastically (up with probability equal to the fraction, so ``E[q] = (x + R) * scale``).

Overflow bound: a sum of ``n`` levels is at most ``n (2^bits - 1)``, which stays below the modulus ``2^32``
while ``n <= 2^(32 - bits)`` (:attr:`Quantiser.max_inputs`); then the sum modulo 2^32 is the exact integer sum
and :meth:`Quantiser.dequantise_sum` returns ``sum / scale - n R``. :meth:`Quantiser.for_inputs` picks the most
bits that keep ``n`` inputs safe. The error per value is at most ``1 / (2 scale)`` (nearest rounding) or
``1 / scale`` (stochastic), plus whatever clipping to ``[-R, R]`` removed: choose ``R`` to cover the clipped
update and its noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

MODULUS_BITS = 32
MODULUS = 1 << MODULUS_BITS


@dataclass(frozen=True)
class Quantiser:
    clip_range: float
    bits: int
    stochastic: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip_range) and self.clip_range > 0):
            raise ValueError(f"clip_range must be a finite number > 0, got {self.clip_range}")
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= MODULUS_BITS:
            raise ValueError(f"bits must be an integer in [1, {MODULUS_BITS}], got {self.bits!r}")

    @classmethod
    def for_inputs(cls, clip_range: float, num_inputs: int, stochastic: bool = False) -> Quantiser:
        """The finest quantiser whose sum of ``num_inputs`` values cannot wrap around the modulus."""
        if not 1 <= num_inputs <= MODULUS // 2:
            raise ValueError(f"num_inputs must lie in [1, {MODULUS // 2}], got {num_inputs}")
        return cls(clip_range, MODULUS_BITS - (num_inputs - 1).bit_length(), stochastic)

    @property
    def levels(self) -> int:
        return (1 << self.bits) - 1

    @property
    def scale(self) -> float:
        return self.levels / (2 * self.clip_range)

    @property
    def max_inputs(self) -> int:
        """The most inputs whose sum stays below the modulus: ``2^(32 - bits)``."""
        return (MODULUS - 1) // self.levels

    def quantise(self, values: torch.Tensor, generator: torch.Generator | None = None) -> np.ndarray:
        """A flat uint32 array of levels; stochastic rounding draws from ``generator`` (required then)."""
        x = values.detach().reshape(-1).to(device="cpu", dtype=torch.float64)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("values must be finite to be quantised")
        scaled = (x.clamp(-self.clip_range, self.clip_range) + self.clip_range) * self.scale
        if self.stochastic:
            if generator is None:
                raise ValueError("generator is required for stochastic rounding")
            floor = scaled.floor()
            uniform = torch.rand(scaled.shape, generator=generator, dtype=torch.float64)
            levels = floor + (uniform < scaled - floor).to(torch.float64)
        else:
            levels = scaled.round()
        return levels.clamp(0, self.levels).to(torch.int64).numpy().astype(np.uint32)

    def dequantise_sum(self, total: np.ndarray, num_inputs: int) -> torch.Tensor:
        """The float64 sum of ``num_inputs`` values from the (unmasked) sum of their levels."""
        if not 1 <= num_inputs <= self.max_inputs:
            raise ValueError(
                f"num_inputs must lie in [1, {self.max_inputs}] for {self.bits} bits (else the sum may wrap)"
            )
        if total.dtype != np.uint32:
            raise ValueError(f"total must be uint32, got {total.dtype}")
        return torch.from_numpy(total.astype(np.float64)) / self.scale - num_inputs * self.clip_range


def flatten(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """All tensors as one float64 vector, in sorted name order (what a client quantises)."""
    return torch.cat([tensors[name].detach().reshape(-1).to("cpu", torch.float64) for name in sorted(tensors)])


def unflatten(vector: torch.Tensor, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`flatten`: ``vector`` cut into tensors shaped (and typed) like ``like``'s."""
    expected = sum(t.numel() for t in like.values())
    if vector.numel() != expected:
        raise ValueError(f"vector has {vector.numel()} values, the tensors hold {expected}")
    out, start = {}, 0
    for name in sorted(like):
        t = like[name]
        out[name] = vector[start:start + t.numel()].reshape(t.shape).to(t.dtype)
        start += t.numel()
    return out
