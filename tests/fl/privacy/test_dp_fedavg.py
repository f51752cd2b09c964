"""DP-FedAvg clipping and noise: norms bounded, small updates untouched, the stacked form equals the loop bitwise."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.fl.privacy import dp_fedavg
from consortium.fl.privacy.dp_fedavg import NoiseMode

PROPERTY = settings(max_examples=60, deadline=None)


def delta_of(seed: int, scale: float, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) * scale for name, shape in shapes.items()}


SHAPES = {"w": (5, 3), "b": (3,), "z": (2, 2, 2)}


@PROPERTY
@given(seed=st.integers(0, 2**31), scale=st.floats(1e-4, 1e4), clip=st.floats(1e-3, 1e3))
def test_a_clipped_update_is_within_the_clip_norm(seed: int, scale: float, clip: float) -> None:
    clipped, norm = dp_fedavg.clip_update(delta_of(seed, scale, SHAPES), clip)
    assert dp_fedavg.global_norm(clipped) <= clip * (1 + 1e-6)
    if norm > clip:
        assert math.isclose(dp_fedavg.global_norm(clipped), clip, rel_tol=1e-5)


@PROPERTY
@given(seed=st.integers(0, 2**31), clip=st.floats(1.0, 1e3))
def test_an_update_within_the_clip_norm_is_unchanged(seed: int, clip: float) -> None:
    delta = delta_of(seed, 1.0, SHAPES)
    small = {name: t * (0.99 * clip / dp_fedavg.global_norm(delta)) for name, t in delta.items()}
    clipped, _ = dp_fedavg.clip_update(small, clip)
    assert all(torch.equal(clipped[name], small[name]) for name in small)
    privatised, _ = dp_fedavg.privatise(small, clip, 0.0, seed)
    assert all(torch.equal(privatised[name], small[name]) for name in small)


@PROPERTY
@given(
    seed=st.integers(0, 2**31),
    clients=st.integers(1, 9),
    clip=st.floats(0.01, 100.0),
    std=st.sampled_from([0.0, 0.3, 2.0]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_the_stacked_form_equals_the_per_client_loop(
    seed: int, clients: int, clip: float, std: float, dtype: torch.dtype
) -> None:
    deltas = [
        {name: t.to(dtype) for name, t in delta_of(seed + c, 10.0 ** (c % 3 - 1), SHAPES).items()}
        for c in range(clients)
    ]
    seeds = [dp_fedavg.noise_seed(seed, 3, f"client-{c}") for c in range(clients)]
    looped = [dp_fedavg.privatise(d, clip, std, s) for d, s in zip(deltas, seeds, strict=True)]
    stacked = {name: torch.stack([d[name] for d in deltas]) for name in SHAPES}
    batched, norms = dp_fedavg.privatise_stacked(stacked, clip, std, seeds)
    for c, (result, norm) in enumerate(looped):
        assert float(norms[c]) == norm
        for name in SHAPES:
            assert torch.equal(batched[name][c], result[name])


def test_noise_is_reproducible_per_seed_and_independent_of_batching() -> None:
    delta = delta_of(0, 1.0, SHAPES)
    a, _ = dp_fedavg.privatise(delta, 1.0, 0.5, 42)
    b, _ = dp_fedavg.privatise(delta, 1.0, 0.5, 42)
    c, _ = dp_fedavg.privatise(delta, 1.0, 0.5, 43)
    assert all(torch.equal(a[n], b[n]) for n in SHAPES) and not torch.equal(a["w"], c["w"])
    stacked = {name: torch.stack([delta[name]] * 3) for name in SHAPES}
    batched, _ = dp_fedavg.privatise_stacked(stacked, 1.0, 0.5, [7, 42, 9])
    assert all(torch.equal(batched[n][1], a[n]) for n in SHAPES)


def test_noise_has_the_stated_standard_deviation() -> None:
    zeros = {"x": torch.zeros(200_000, dtype=torch.float64)}
    noisy = dp_fedavg.add_noise(zeros, 0.7, seed=1)["x"]
    assert abs(float(noisy.std()) - 0.7) < 0.01 and abs(float(noisy.mean())) < 0.01


def test_distributed_noise_sums_to_the_central_standard_deviation() -> None:
    n, sigma, clip = 16, 1.3, 0.5
    std = dp_fedavg.client_noise_std(NoiseMode.DISTRIBUTED, sigma, clip, n)
    total = sum(dp_fedavg.add_noise({"x": torch.zeros(50_000, dtype=torch.float64)}, std, seed=s)["x"]
                for s in range(n))
    assert abs(float(total.std()) - sigma * clip) < 0.02 * sigma * clip
    assert dp_fedavg.client_noise_std("local", sigma, clip, n) == sigma * clip
    assert dp_fedavg.client_noise_std("central", sigma, clip, n) == 0.0
    assert dp_fedavg.server_noise_std("central", sigma, clip) == sigma * clip
    assert dp_fedavg.server_noise_std("distributed", sigma, clip) == 0.0


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: dp_fedavg.clip_update({"x": torch.ones(2)}, 0.0), "clip"),
        (lambda: dp_fedavg.clip_update({"x": torch.ones(2)}, float("nan")), "clip"),
        (lambda: dp_fedavg.client_noise_std("local", -1.0, 1.0, 3), "noise_multiplier"),
        (lambda: dp_fedavg.client_noise_std("distributed", 1.0, 1.0, 0), "num_clients"),
        (lambda: dp_fedavg.add_noise({"x": torch.ones(2)}, -0.1, 0), "std"),
        (lambda: dp_fedavg.privatise_stacked({"x": torch.ones(2, 3)}, 1.0, 1.0, [1]), "seeds"),
    ],
)
def test_bad_input_names_the_field(call, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=field):
        call()
    with pytest.raises(ValueError):
        NoiseMode("secret")
