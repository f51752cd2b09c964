"""Quantisation: levels within range, the sum of n inputs dequantises within the rounding error, no wrap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.fl.privacy.secagg.quantise import MODULUS, Quantiser, flatten, unflatten


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), seed=st.integers(0, 2**31), clip_range=st.floats(1e-3, 1e3),
       stochastic=st.booleans())
def test_the_sum_of_n_inputs_never_wraps_and_dequantises_closely(
    n: int, seed: int, clip_range: float, stochastic: bool
) -> None:
    q = Quantiser.for_inputs(clip_range, n, stochastic)
    assert n <= q.max_inputs and n * q.levels < MODULUS
    g = torch.Generator().manual_seed(seed)
    values = (torch.rand((min(n, 50), 7), generator=g, dtype=torch.float64) * 2 - 1) * clip_range
    levels = [q.quantise(v, g) for v in values]
    assert all(level.dtype == np.uint32 and int(level.max()) <= q.levels for level in levels)
    total = np.zeros(7, dtype=np.uint32)
    for level in levels:
        total += level
    assert np.array_equal(total.astype(np.int64), np.sum([lv.astype(np.int64) for lv in levels], axis=0))
    error = (q.dequantise_sum(total, len(levels)) - values.sum(0)).abs().max()
    assert float(error) <= len(levels) * (1 if stochastic else 0.5) / q.scale * (1 + 1e-9) + 1e-9 * clip_range


def test_values_beyond_the_range_are_clipped() -> None:
    q = Quantiser(2.0, 16)
    levels = q.quantise(torch.tensor([-5.0, -2.0, 0.0, 2.0, 9.0]))
    assert levels.tolist() == [0, 0, round(q.levels / 2), q.levels, q.levels]


def test_stochastic_rounding_is_unbiased() -> None:
    q = Quantiser(1.0, 4, stochastic=True)
    x = torch.full((100_000,), 0.123, dtype=torch.float64)
    mean = q.dequantise_sum(np.array([q.quantise(x, torch.Generator().manual_seed(0)).astype(np.uint64).sum()
                                      % MODULUS], dtype=np.uint32), 100_000) / 100_000
    assert abs(float(mean) - 0.123) < 2e-3


def test_flatten_and_unflatten_round_trip() -> None:
    like = {"w": torch.randn(3, 4), "b": torch.randn(4, dtype=torch.float64)}
    back = unflatten(flatten(like), like)
    assert all(torch.equal(back[k], like[k]) for k in like)
    with pytest.raises(ValueError, match="values"):
        unflatten(torch.zeros(5), like)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: Quantiser(0.0, 16), "clip_range"),
        (lambda: Quantiser(1.0, 33), "bits"),
        (lambda: Quantiser.for_inputs(1.0, 0), "num_inputs"),
        (lambda: Quantiser(1.0, 31).dequantise_sum(np.zeros(2, np.uint32), 3), "num_inputs"),
        (lambda: Quantiser(1.0, 8).dequantise_sum(np.zeros(2, np.int64), 1), "total"),
        (lambda: Quantiser(1.0, 8, stochastic=True).quantise(torch.zeros(3)), "generator"),
        (lambda: Quantiser(1.0, 8).quantise(torch.tensor([float("nan")])), "finite"),
    ],
)
def test_bad_input_names_the_field(call, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=field):
        call()
