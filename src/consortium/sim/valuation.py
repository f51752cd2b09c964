"""A simulated run whose every round is valued: each org's update, the round's game, one or more measures.

Orgs train in turn as the loop engine's clients do (``local_update`` with the run's per-round seed), the round
closes through the plan with every update (the run itself does not depend on the valuation), and each measure
values the same game, so exact Shapley is the reference the estimates are compared against round by round.
An org may be given a *behaviour* that replaces its update (a free rider sending noise, for example).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from consortium.contributions import ValueMetric, round_game, value_round
from consortium.fl.core import FLError, LocalData, Params, Update, derive_seed
from consortium.fl.valuation import GtgOptions, accumulate
from consortium.plan import RunPlan
from consortium.protocol import ProjectCreate

Behaviour = Callable[[Params, Update, int], Update]
"""Replaces an org's honest update: (round's params, its honest update, a seed) -> what it sends."""


def noise_update(scale: float = 0.05) -> Behaviour:
    """A free rider that trains nothing and sends the round's params plus Gaussian noise."""

    def send(params: Params, update: Update, seed: int) -> Update:
        generator = torch.Generator().manual_seed(seed)
        noisy = {name: tensor + scale * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
                 for name, tensor in params.items()}
        return replace(update, tensors=noisy)

    return send


@dataclass
class ValuedRun:
    """Per measure, each org's value summed over rounds, the seconds spent valuing and coalitions scored."""

    orgs: list[str]
    totals: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    evaluations: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    final_metrics: dict[str, float] = field(default_factory=dict)

    def values(self, method: str) -> np.ndarray:
        """The method's totals in the order of ``orgs``."""
        return np.array([self.totals[method].get(org, 0.0) for org in self.orgs])


def valued_run(
    spec: ProjectCreate, shares: Mapping[str, LocalData], test: LocalData, methods: Sequence[str],
    *, behaviours: Mapping[str, Behaviour] | None = None, options: GtgOptions | None = None,
    metric: ValueMetric | None = None,
) -> ValuedRun:
    """Run ``spec`` over the orgs' ``shares`` and value every round by each of ``methods``."""
    if not shares:
        raise FLError("a valued run needs at least one org")
    behaviours = behaviours or {}
    unknown = set(behaviours) - set(shares)
    if unknown:
        raise FLError(f"behaviours for orgs without a share: {sorted(unknown)}")
    orgs = list(shares)
    num_features = int(next(iter(shares.values())).x.shape[1])
    plan = RunPlan.of(spec, num_features=num_features, clients=len(orgs))
    if plan.uses_scaffold or plan.privacy is not None:
        raise FLError("a valued run takes plain updates: SCAFFOLD and DP specs are valued in real runs only")
    metric = metric or ValueMetric.of(plan.algorithm.name)
    params = plan.init_params()
    server_state = plan.init_server_state(params)
    run = ValuedRun(orgs=orgs, totals={m: {} for m in methods}, seconds=dict.fromkeys(methods, 0.0),
                    evaluations=dict.fromkeys(methods, 0))
    for round_number in range(1, spec.rounds + 1):
        broadcast = plan.broadcast(params, server_state)
        updates = []
        for org in orgs:
            seed = derive_seed(spec.seed, "fit", round_number, org)
            update = plan.algorithm.local_update(plan.hp, broadcast, shares[org], seed)
            if org in behaviours:
                update = behaviours[org](params, update, seed)
            updates.append(replace(update, client_id=org))
        game = round_game(plan, params, server_state, updates, test, metric)
        for method in methods:
            started = time.perf_counter()
            rng = np.random.default_rng(derive_seed(spec.seed, "valuation", round_number, method))
            result = value_round(game, len(orgs), method, rng, options)
            run.seconds[method] += time.perf_counter() - started
            run.evaluations[method] += result.evaluations
            run.totals[method] = accumulate(run.totals[method], orgs, result.values)
        params, server_state = plan.close_round(params, plan.aggregate(params, updates), server_state)
        run.rounds = round_number
    run.final_metrics = plan.algorithm.evaluate(plan.hp, params, test).metrics
    return run
