"""Client-level DP-FedAvg (McMahan et al., ICLR 2018): clip each client's update delta, add Gaussian noise.

An update here is a client's *delta* (its local params minus the global ones), a dict of tensors. Each delta is
scaled to global L2 norm at most ``C`` (all tensors together); then Gaussian noise of standard deviation
``sigma * C`` protects the sum, added in one of three places (:class:`NoiseMode`):

- ``central``: the server adds ``N(0, (sigma C)^2)`` once to the sum of the clipped deltas (it sees them);
- ``local``: every client adds ``N(0, (sigma C)^2)`` to its own delta (each delta is private on its own);
- ``distributed``: every client adds ``N(0, (sigma C)^2 / n)``, so the sum of ``n`` clients' noise has the
  central standard deviation ``sigma C`` while no single contribution does: for use under secure aggregation,
  where the server only ever sees the sum. If clients drop out the sum's noise is ``sigma C sqrt(m / n)``
  for the ``m`` that remain, so ``n`` should be the number expected to *finish* the round.

Noise is reproducible: client ``c`` draws from its own CPU ``torch.Generator`` seeded with
:func:`noise_seed` (so batching clients changes no draw), tensors in sorted name order, each in its own dtype.
:func:`privatise_stacked` does the same for a chunk of clients stacked on a leading axis (the vectorised
simulator) and gives the per-client loop's :func:`privatise` result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import StrEnum

import torch

from consortium.fl.core import derive_seed

Tensors = dict[str, torch.Tensor]


class NoiseMode(StrEnum):
    CENTRAL = "central"
    LOCAL = "local"
    DISTRIBUTED = "distributed"


def noise_seed(run_seed: int, round_number: int, client_id: str, purpose: str = "dp-noise") -> int:
    """The seed of one client's noise in one round (``purpose`` separates independent draws)."""
    return derive_seed(purpose, run_seed, round_number, client_id)


def _check_positive(value: float, field: str, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not (math.isfinite(value) and ok):
        raise ValueError(f"{field} must be a finite number {'>=' if allow_zero else '>'} 0, got {value}")


def client_noise_std(mode: NoiseMode | str, noise_multiplier: float, clip: float, num_clients: int) -> float:
    """Standard deviation of the noise one client adds to its clipped delta (0 in central mode)."""
    mode = NoiseMode(mode)
    _check_positive(noise_multiplier, "noise_multiplier", allow_zero=True)
    _check_positive(clip, "clip")
    if mode is NoiseMode.CENTRAL:
        return 0.0
    if mode is NoiseMode.LOCAL:
        return noise_multiplier * clip
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1 for distributed noise, got {num_clients}")
    return noise_multiplier * clip / math.sqrt(num_clients)


def server_noise_std(mode: NoiseMode | str, noise_multiplier: float, clip: float) -> float:
    """Standard deviation of the noise the server adds to the sum (``sigma C`` in central mode, else 0)."""
    mode = NoiseMode(mode)
    _check_positive(noise_multiplier, "noise_multiplier", allow_zero=True)
    _check_positive(clip, "clip")
    return noise_multiplier * clip if mode is NoiseMode.CENTRAL else 0.0


def global_norm(tensors: Mapping[str, torch.Tensor]) -> float:
    """The L2 norm of all tensors together, accumulated in float64 (the reduction of :func:`stacked_norms`
    on a stack of one, so the loop and the stacked form agree to the bit)."""
    return float(stacked_norms({name: t.unsqueeze(0) for name, t in tensors.items()})[0])


def clip_factor(norm: float, clip: float) -> float:
    """``min(1, clip / norm)``: what a delta of this norm is multiplied by."""
    return 1.0 if norm <= clip else clip / norm


def clip_update(delta: Mapping[str, torch.Tensor], clip: float) -> tuple[Tensors, float]:
    """``delta`` scaled to global L2 norm at most ``clip`` (returned as is when already within), and its
    norm before clipping."""
    _check_positive(clip, "clip")
    norm = global_norm(delta)
    factor = clip_factor(norm, clip)
    if factor == 1.0:
        return dict(delta), norm
    return {name: t * torch.tensor(factor, dtype=t.dtype, device=t.device) for name, t in delta.items()}, norm


def gaussian_like(tensors: Mapping[str, torch.Tensor], std: float, generator: torch.Generator) -> Tensors:
    """``N(0, std^2)`` noise shaped like each tensor, drawn on the CPU in sorted name order, in each tensor's
    dtype, then moved to its device."""
    noise = {}
    for name in sorted(tensors):
        t = tensors[name]
        draw = torch.randn(t.shape, generator=generator, dtype=t.dtype)
        noise[name] = (draw * torch.tensor(std, dtype=t.dtype)).to(t.device)
    return noise


def add_noise(tensors: Mapping[str, torch.Tensor], std: float, seed: int) -> Tensors:
    """``tensors`` plus ``N(0, std^2)`` noise from a generator seeded with ``seed`` (unchanged when std is 0).

    The server's central noise on the sum, or one client's local or distributed noise."""
    _check_positive(std, "std", allow_zero=True)
    if std == 0:
        return dict(tensors)
    noise = gaussian_like(tensors, std, torch.Generator().manual_seed(seed))
    return {name: t + noise[name] for name, t in tensors.items()}


def privatise(delta: Mapping[str, torch.Tensor], clip: float, std: float, seed: int) -> tuple[Tensors, float]:
    """One client's step: clip ``delta`` to ``clip``, add its noise of standard deviation ``std`` (see
    :func:`client_noise_std`) drawn from ``seed``. Returns the result and the norm before clipping."""
    clipped, norm = clip_update(delta, clip)
    return add_noise(clipped, std, seed), norm


def stacked_norms(stacked: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-client global L2 norms ``[C]`` (float64) of tensors stacked on a leading client axis."""
    total: torch.Tensor | None = None
    for name in sorted(stacked):
        t = stacked[name].detach()
        squares = t.to(torch.float64).pow(2).reshape(t.shape[0], -1).sum(1)
        total = squares if total is None else total + squares
    if total is None:
        raise ValueError("there are no tensors to clip")
    return total.sqrt()


def clip_stacked(stacked: Mapping[str, torch.Tensor], clip: float) -> tuple[Tensors, torch.Tensor]:
    """Every client's delta (leading axis) clipped to ``clip``, and the norms ``[C]`` before clipping."""
    _check_positive(clip, "clip")
    norms = stacked_norms(stacked)
    # clip / norms would be computed as clip * (1 / norms), one ulp away from the loop's clip / norm
    factors = torch.where(norms <= clip, torch.ones_like(norms), torch.full_like(norms, clip) / norms)
    clipped = {}
    for name, t in stacked.items():
        scale = factors.to(device=t.device, dtype=t.dtype).reshape(-1, *([1] * (t.dim() - 1)))
        clipped[name] = t * scale
    return clipped, norms


def privatise_stacked(
    stacked: Mapping[str, torch.Tensor], clip: float, std: float, seeds: Sequence[int]
) -> tuple[Tensors, torch.Tensor]:
    """:func:`privatise` for ``C`` clients at once: ``stacked`` tensors ``[C, ...]``, ``seeds[c]`` client
    ``c``'s noise seed. Each client's noise comes from its own generator, so the draws equal the loop's."""
    clipped, norms = clip_stacked(stacked, clip)
    if len(seeds) != norms.shape[0]:
        raise ValueError(f"seeds has {len(seeds)} entries for {norms.shape[0]} stacked clients")
    _check_positive(std, "std", allow_zero=True)
    if std == 0:
        return clipped, norms
    per_client = [
        gaussian_like({name: t[c] for name, t in clipped.items()}, std, torch.Generator().manual_seed(seed))
        for c, seed in enumerate(seeds)
    ]
    return {name: t + torch.stack([noise[name] for noise in per_client]) for name, t in clipped.items()}, norms
