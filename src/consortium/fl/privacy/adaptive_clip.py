"""Adaptive clipping (Andrew, Thakkar, McMahan and Ramaswamy, "Differentially Private Learning with Adaptive
Clipping", NeurIPS 2021): the clip norm tracks a quantile of the clients' update norms.

Each round every sampled client reports ``b_i = 1[norm_i <= C] - 1/2`` (centred, so adding or removing one
client moves the sum by at most 1/2). The server adds ``N(0, sigma_b^2)`` to the sum, estimates the fraction
of unclipped updates ``b = noisy_sum / n + 1/2`` and takes the geometric step
``C <- C * exp(-eta * (b - gamma))`` towards the target quantile ``gamma``.

The count costs privacy too: releasing it with noise ``sigma_b`` and the update sum with noise multiplier
``sigma_delta`` together cost what one Gaussian release with multiplier ``sigma`` costs when
``sigma_delta = (sigma^-2 - (2 sigma_b)^-2)^(-1/2)`` (Theorem 1 of the paper); account the run with ``sigma``
and noise the updates with :func:`update_noise_multiplier`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AdaptiveClipping:
    """Options of quantile-based clipping; the paper's defaults are gamma = 0.5, eta = 0.2, sigma_b = n/20."""

    initial_clip: float
    target_quantile: float = 0.5
    learning_rate: float = 0.2
    count_noise_std: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial_clip) and self.initial_clip > 0):
            raise ValueError(f"initial_clip must be a finite number > 0, got {self.initial_clip}")
        if not 0 <= self.target_quantile <= 1:
            raise ValueError(f"target_quantile must lie in [0, 1], got {self.target_quantile}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate}")
        if not (math.isfinite(self.count_noise_std) and self.count_noise_std > 0):
            raise ValueError(f"count_noise_std must be a finite number > 0, got {self.count_noise_std}")


def update_noise_multiplier(noise_multiplier: float, count_noise_std: float) -> float:
    """The noise multiplier for the update sum when the clip count is released with ``count_noise_std``, so
    the pair costs what ``noise_multiplier`` alone would. ValueError when the count's noise is too small to
    leave any budget for the updates (``2 * count_noise_std <= noise_multiplier``)."""
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ValueError(f"noise_multiplier must be a finite number > 0, got {noise_multiplier}")
    rest = noise_multiplier ** -2 - (2 * count_noise_std) ** -2
    if rest <= 0:
        raise ValueError(
            f"count_noise_std = {count_noise_std} spends the whole budget of noise_multiplier = "
            f"{noise_multiplier}; it must exceed noise_multiplier / 2"
        )
    return rest ** -0.5


def clip_indicator(norm: float, clip: float) -> float:
    """A client's centred report: +1/2 when its update was not clipped (``norm <= clip``), else -1/2."""
    return 0.5 if norm <= clip else -0.5


def next_clip(
    clip: float, indicator_sum: float, num_clients: int, options: AdaptiveClipping, generator: torch.Generator
) -> float:
    """The next round's clip norm from this round's summed :func:`clip_indicator` reports of ``num_clients``
    clients; the count's noise comes from ``generator``."""
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if abs(indicator_sum) > num_clients / 2:
        raise ValueError(f"indicator_sum = {indicator_sum} is impossible for {num_clients} clients")
    noise = float(torch.randn((), generator=generator, dtype=torch.float64)) * options.count_noise_std
    unclipped_fraction = (indicator_sum + noise) / num_clients + 0.5
    return clip * math.exp(-options.learning_rate * (unclipped_fraction - options.target_quantile))
