"""Adaptive clipping: the clip norm converges to the target quantile; the split noise keeps the total cost."""

from __future__ import annotations

import math

import pytest
import torch

from consortium.fl.privacy import adaptive_clip


def test_adaptive_clipping_moves_towards_the_target_quantile() -> None:
    options = adaptive_clip.AdaptiveClipping(initial_clip=1.0, target_quantile=0.5, count_noise_std=1e-9)
    g = torch.Generator().manual_seed(0)
    norms = torch.linspace(0.0, 10.0, 101)  # median 5
    clip = options.initial_clip
    for _ in range(200):
        reports = sum(adaptive_clip.clip_indicator(float(n), clip) for n in norms)
        clip = adaptive_clip.next_clip(clip, reports, len(norms), options, g)
    assert 4.5 < clip < 5.5


def test_the_split_noise_costs_what_the_total_noise_costs() -> None:
    sigma, sigma_b = 1.0, 5.0
    sigma_delta = adaptive_clip.update_noise_multiplier(sigma, sigma_b)
    assert sigma_delta > sigma
    assert math.isclose(sigma_delta ** -2 + (2 * sigma_b) ** -2, sigma ** -2)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: adaptive_clip.AdaptiveClipping(initial_clip=0.0), "initial_clip"),
        (lambda: adaptive_clip.AdaptiveClipping(1.0, target_quantile=1.5), "target_quantile"),
        (lambda: adaptive_clip.AdaptiveClipping(1.0, learning_rate=0.0), "learning_rate"),
        (lambda: adaptive_clip.AdaptiveClipping(1.0, count_noise_std=-1.0), "count_noise_std"),
        (lambda: adaptive_clip.update_noise_multiplier(1.0, 0.5), "count_noise_std"),
        (lambda: adaptive_clip.next_clip(1.0, 3.0, 4, adaptive_clip.AdaptiveClipping(1.0), torch.Generator()),
         "indicator_sum"),
    ],
)
def test_bad_input_names_the_field(call, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=field):
        call()


def test_too_many_unclipped_updates_shrink_the_clip_and_too_few_grow_it() -> None:
    options = adaptive_clip.AdaptiveClipping(initial_clip=1.0, count_noise_std=1e-9)
    g = torch.Generator().manual_seed(1)
    assert adaptive_clip.next_clip(1.0, 5.0, 10, options, g) < 1.0
    assert adaptive_clip.next_clip(1.0, -5.0, 10, options, g) > 1.0
