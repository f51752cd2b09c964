"""`consortium audit dp`: the one-run DP audit (:mod:`consortium.fl.privacy.audit`) of a spec in simulation.

The DP is the engines' own: the audited spec carries a ``privacy`` block (the spec's own, or one built from
the command's flags, which override it), so every engine clips each client's delta to ``C`` and adds the
noise exactly as a simulated run of the spec does (:mod:`consortium.fl.privacy.spec`: weight 1 per client,
local noise by the clients, central noise ``N(0, (sigma C)^2)`` on the sum by the round loop). The audit's
only change goes through the engines' ``tamper`` hook, :class:`CanaryMechanism`: it adds the canaries. Each
IN canary joins the round with the cohort's sampling rate ``q`` (Poisson) and contributes ``C`` times its
direction to the sum of the clipped deltas; the round's update is that sum over the cohort's size (a public
count), the mean the engines' DP-FedAvg takes. Without DP (``--noise-multiplier 0``) the spec runs without a
``privacy`` block, so the hook clips the deltas itself (same ``C``, no noise): the baseline that shows the
audit has power.

The claimed epsilon is that of ``rounds`` Poisson-sampled Gaussian mechanisms at rate ``q`` with the run's
noise multiplier (:mod:`~consortium.fl.privacy.accountant`), which covers each canary; the spec's own target
(its accountant, its sampling) is reported beside it.
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
from consortium.privacy_wire import PrivacySpec
from consortium.protocol import ProjectCreate
from consortium.sim.engines.factory import make_engine
from consortium.sim.simulation import Simulation
from consortium.sim.spec import load_spec

AGGREGATE_ID = "dp-aggregate"
DEFAULT_CLIP = 1.0
DEFAULT_DELTA = 1e-5


class CanaryMechanism:
    """The simulator's tamper hook that adds canaries to each round's DP-FedAvg sum (see the module).

    ``clips`` is True only without DP, where the engines leave the deltas unclipped."""

    def __init__(self, directions: torch.Tensor, membership: np.ndarray, clip: float, sampling_rate: float,
                 seed: int, clips: bool = False) -> None:
        self.directions, self.membership = directions, membership
        self.clip, self.sampling_rate, self.seed, self.clips = clip, sampling_rate, seed, clips
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
        if self.clips:
            norms = deltas.norm(dim=1, keepdim=True)
            deltas = deltas * torch.clamp(self.clip / norms.clamp_min(1e-300), max=1.0)
        total = deltas.sum(0)
        rng = np.random.default_rng(derive_seed("audit-canaries", self.seed, self.round))
        joining = self.membership & (rng.random(len(self.membership)) < self.sampling_rate)
        total += self.clip * self.directions[torch.from_numpy(joining)].sum(0)
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
    noise: str = "none"
    """Who added the noise: the spec's ``privacy.noise`` (``central``, ``local``), ``none`` without DP."""
    epsilon_target: float = math.inf
    """The run's own guarantee by the spec's accountant and sampling (infinite without DP)."""

    def as_dict(self) -> dict[str, Any]:
        return {**self.outcome.as_dict(), "epsilon_claimed": self.epsilon_claimed, "clip": self.clip,
                "noise_multiplier": self.noise_multiplier, "rounds": self.rounds,
                "sampling_rate": self.sampling_rate, "noise": self.noise, "epsilon_target": self.epsilon_target,
                "final_metrics": self.final_metrics}


def claimed_epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float) -> float:
    """Epsilon the accountant grants the canaries' mechanism (infinite without noise)."""
    if noise_multiplier == 0:
        return math.inf
    return accountant.epsilon_spent(noise_multiplier, sampling_rate, rounds, delta, "poisson")


def audited_privacy(
    spec_privacy: PrivacySpec | None, rounds: int, sampling_rate: float, population: int,
    clip: float | None = None, noise_multiplier: float | None = None, epsilon: float | None = None,
    delta: float | None = None,
) -> tuple[PrivacySpec | None, float, float]:
    """The privacy block the audited run uses, its clip and delta: the spec's own, with any of the command's
    flags overriding it; None for ``noise_multiplier == 0`` (no DP). FLError naming the flag at fault."""
    if noise_multiplier is not None and epsilon is not None:
        raise FLError("give at most one of --noise-multiplier and --epsilon")
    if spec_privacy is None and noise_multiplier is None and epsilon is None:
        raise FLError("the spec has no `privacy` block: give --noise-multiplier SIGMA (0 = no DP) or --epsilon E "
                      "(with --clip C), or add a privacy block to the spec")
    base: dict[str, Any] = spec_privacy.model_dump() if spec_privacy else {"noise": "central", "sampling": "poisson"}
    clip = base.get("clip", DEFAULT_CLIP) if clip is None else clip
    delta = base.get("delta", DEFAULT_DELTA) if delta is None else delta
    if not (math.isfinite(clip) and clip > 0):
        raise FLError(f"--clip must be a finite number > 0, got {clip}")
    if noise_multiplier is not None and not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise FLError(f"--noise-multiplier must be a finite number >= 0, got {noise_multiplier}")
    if noise_multiplier == 0:
        return None, clip, delta
    fields = {**base, "clip": clip, "delta": delta}
    try:
        if epsilon is not None:
            fields.pop("noise_multiplier", None)
            fields["epsilon"] = epsilon
        elif noise_multiplier is not None:
            spent = accountant.epsilon_spent(noise_multiplier, sampling_rate, rounds, delta, fields["sampling"],
                                             population)
            if spent > 1e3:
                raise FLError(f"--noise-multiplier {noise_multiplier} spends epsilon = {spent:.4g} over {rounds} "
                              "rounds, beyond any claim (1000); use 0 to audit without DP")
            fields.update(noise_multiplier=noise_multiplier, epsilon=spent * (1 + 1e-6))
        return PrivacySpec.model_validate(fields), clip, delta
    except ValueError as exc:
        raise FLError(f"privacy: {exc}") from exc


def _audited_project(project: ProjectCreate, privacy: PrivacySpec | None, rounds: int | None,
                     seed: int) -> ProjectCreate:
    """The spec as audited: its privacy resolved, and its own seed (training, DP noise) varied by the audit's."""
    update: dict[str, Any] = {"privacy": privacy, "seed": derive_seed("audit-run", project.seed, seed)}
    if rounds is not None:
        update["rounds"] = rounds
    return project.model_copy(update=update)


def run_dp_audit(spec_path: Path, canaries: int, guesses: int, *, clip: float | None = None,
                 noise_multiplier: float | None = None, epsilon: float | None = None, delta: float | None = None,
                 rounds: int | None = None, seed: int = 0,
                 overrides: dict[str, Any] | None = None) -> DpAuditReport:
    """Audit the spec's training with ``canaries`` canaries, ``guesses`` guesses on each side; the DP comes
    from the spec's ``privacy`` block unless a flag overrides it (:func:`audited_privacy`)."""
    if canaries < 2 or not 1 <= guesses <= canaries // 2:
        raise FLError(f"--guesses must lie in [1, canaries / 2] with at least 2 canaries, got {guesses} of "
                      f"{canaries}")
    project, settings = load_spec(spec_path, overrides)
    if project.strategy.name != "fedavg" or project.strategy.server_optimizer is not None:
        raise FLError("the DP audit runs DP-FedAvg: the spec's strategy must be fedavg without a server optimizer")
    if project.privacy is not None and project.privacy.mechanism != "dp_fedavg":
        raise FLError("the DP audit runs DP-FedAvg (one canary client per direction); a DP-SGD spec's "
                      "per-record guarantee is not what it measures")
    rate = settings.cohort_size() / settings.clients
    privacy, clip, delta = audited_privacy(project.privacy, rounds or project.rounds, rate, settings.clients,
                                           clip, noise_multiplier, epsilon, delta)
    project = _audited_project(project, privacy, rounds, seed)
    simulation = Simulation(project, settings)
    plan = simulation.plan.privacy
    params = simulation.init_params()
    start = flatten(params)
    directions = canary_directions(canaries, start.numel(), derive_seed("audit-directions", seed))
    membership = draw_membership(canaries, derive_seed("audit-membership", seed))
    mechanism = CanaryMechanism(directions, membership, clip, rate, seed, clips=plan is None)
    simulation = Simulation(project, settings, dataset=simulation.dataset, parts=simulation.parts,
                            initial_params=params, tamper=mechanism)
    engine = make_engine(settings.engine, simulation.setup, settings)
    try:
        result = simulation.run(engine)
    finally:
        engine.close()
    outcome = judge(membership, scores(flatten(result.params) - start, directions), guesses, guesses, delta)
    sigma = plan.noise_multiplier if plan is not None else 0.0
    return DpAuditReport(outcome, claimed_epsilon(sigma, rate, project.rounds, delta), clip, sigma,
                         project.rounds, rate, result.final_metrics,
                         plan.noise.value if plan is not None else "none",
                         plan.guarantee.epsilon if plan is not None else math.inf)
