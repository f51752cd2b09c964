"""`consortium audit dp`: the one-run DP audit (:mod:`consortium.fl.privacy.audit`) of a spec in simulation.

The spec runs in the simulator as usual, with one change through the engines' ``tamper`` hook: the round's
aggregate becomes client-level DP-FedAvg with canaries, :class:`CanaryMechanism`. Each real client's delta
is clipped to L2 norm ``C``; each IN canary joins the round with the cohort's sampling rate ``q`` (Poisson)
and contributes ``C`` times its direction; central Gaussian noise ``N(0, (sigma C)^2)`` goes on the sum; the
new params are the old ones plus the noisy sum over the cohort's size (a public count). The claimed epsilon
is that of ``rounds`` Poisson-sampled Gaussian mechanisms at rate ``q`` (:mod:`~consortium.fl.privacy.accountant`),
which covers each canary.

The DP pair ``(clip, noise_multiplier)`` is given explicitly: once the project spec carries its privacy settings,
they are read from it instead (a one-line change in :func:`run_dp_audit`'s caller).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from consortium.fl.core import FLError, Params, StackedUpdates, derive_seed
from consortium.fl.privacy import accountant
from consortium.fl.privacy.audit import AuditOutcome, canary_directions, draw_membership, judge, scores
from consortium.fl.privacy.secagg.quantise import flatten, unflatten
from consortium.sim.engines.factory import make_engine
from consortium.sim.simulation import Simulation
from consortium.sim.spec import load_spec

AGGREGATE_ID = "dp-aggregate"


class CanaryMechanism:
    """The simulator's tamper hook that turns each round into DP-FedAvg with canaries (see the module)."""

    def __init__(self, directions: torch.Tensor, membership: np.ndarray, clip: float, noise_multiplier: float,
                 sampling_rate: float, seed: int) -> None:
        self.directions, self.membership = directions, membership
        self.clip, self.noise_multiplier, self.sampling_rate, self.seed = clip, noise_multiplier, sampling_rate, seed
        self.round = 0

    def __call__(self, params: Params, updates: StackedUpdates) -> StackedUpdates:
        self.round += 1
        names = sorted(params)
        if set(updates.tensors) != set(names):
            raise FLError("the DP audit needs updates that are the clients' params (a classifier-like algorithm)")
        current = flatten(params)
        stacked = torch.cat([updates.tensors[n].detach().to("cpu", torch.float64).reshape(len(updates), -1)
                             for n in names], dim=1)
        deltas = stacked - current
        norms = deltas.norm(dim=1, keepdim=True)
        total = (deltas * torch.clamp(self.clip / norms.clamp_min(1e-300), max=1.0)).sum(0)
        rng = np.random.default_rng(derive_seed("audit-canaries", self.seed, self.round))
        joining = self.membership & (rng.random(len(self.membership)) < self.sampling_rate)
        total += self.clip * self.directions[torch.from_numpy(joining)].sum(0)
        if self.noise_multiplier > 0:
            generator = torch.Generator().manual_seed(derive_seed("audit-noise", self.seed, self.round))
            total += torch.randn(total.shape, generator=generator, dtype=torch.float64) * (
                self.noise_multiplier * self.clip)
        new = unflatten(current + total / len(updates), params)
        device = next(iter(updates.tensors.values())).device
        return StackedUpdates({n: t.unsqueeze(0).to(device) for n, t in new.items()},
                              torch.ones(1, dtype=torch.float64, device=device), (AGGREGATE_ID,))


@dataclass(frozen=True)
class DpAuditReport:
    outcome: AuditOutcome
    epsilon_claimed: float
    clip: float
    noise_multiplier: float
    rounds: int
    sampling_rate: float
    final_metrics: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {**self.outcome.as_dict(), "epsilon_claimed": self.epsilon_claimed, "clip": self.clip,
                "noise_multiplier": self.noise_multiplier, "rounds": self.rounds,
                "sampling_rate": self.sampling_rate, "final_metrics": self.final_metrics}


def claimed_epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float) -> float:
    """Epsilon the accountant grants the canaries' mechanism (infinite without noise)."""
    if noise_multiplier == 0:
        return math.inf
    return accountant.epsilon_spent(noise_multiplier, sampling_rate, rounds, delta, "poisson")


def run_dp_audit(spec_path: Path, clip: float, noise_multiplier: float, canaries: int, guesses: int,
                 delta: float, rounds: int | None = None, seed: int = 0,
                 overrides: dict[str, Any] | None = None) -> DpAuditReport:
    """Audit the spec's training with ``canaries`` canaries, ``guesses`` guesses on each side."""
    if not (math.isfinite(clip) and clip > 0):
        raise FLError(f"--clip must be a finite number > 0, got {clip}")
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise FLError(f"--noise-multiplier must be a finite number >= 0, got {noise_multiplier}")
    if canaries < 2 or not 1 <= guesses <= canaries // 2:
        raise FLError(f"--guesses must lie in [1, canaries / 2] with at least 2 canaries, got {guesses} of "
                      f"{canaries}")
    project, settings = load_spec(spec_path, overrides)
    if rounds is not None:
        project = project.model_copy(update={"rounds": rounds})
    if project.strategy.name != "fedavg" or project.strategy.server_optimizer is not None:
        raise FLError("the DP audit runs DP-FedAvg: the spec's strategy must be fedavg without a server optimizer")
    simulation = Simulation(project, settings)
    params = simulation.init_params()
    start = flatten(params)
    directions = canary_directions(canaries, start.numel(), derive_seed("audit-directions", seed))
    membership = draw_membership(canaries, derive_seed("audit-membership", seed))
    rate = simulation.cohort_size / settings.clients
    mechanism = CanaryMechanism(directions, membership, clip, noise_multiplier, rate, seed)
    simulation = Simulation(project, settings, dataset=simulation.dataset, parts=simulation.parts,
                            initial_params=params, tamper=mechanism)
    engine = make_engine(settings.engine, simulation.setup, settings)
    try:
        result = simulation.run(engine)
    finally:
        engine.close()
    outcome = judge(membership, scores(flatten(result.params) - start, directions), guesses, guesses, delta)
    return DpAuditReport(outcome, claimed_epsilon(noise_multiplier, rate, project.rounds, delta), clip,
                         noise_multiplier, project.rounds, rate, result.final_metrics)
