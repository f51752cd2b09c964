"""A project's privacy settings resolved once: the noise multiplier, who adds the noise, and the per-update
and per-aggregate steps that the node, the hub and the simulator's engines all call.

Under DP-FedAvg every update counts the same (its weight is 1, not its examples: an example-weighted mean
has no bounded sensitivity), each client's delta ``update - params`` is clipped to ``C``, and Gaussian noise
of standard deviation ``sigma * C`` protects the sum, added by every client (``local``) or once by the
server (``central``). The aggregate is ``params + (sum of clipped deltas + noise) / n``.

With adaptive clipping (central noise only) the clip norm of round ``r + 1`` follows the noisy count of this
round's unclipped updates (:mod:`~consortium.fl.privacy.adaptive_clip`); the run is accounted with ``sigma``,
the updates are noised with the smaller ``update_noise_multiplier`` so the two releases together cost it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import torch

from consortium.fl.core import FLError, Params, Update, derive_seed
from consortium.fl.privacy import accountant, adaptive_clip, dp_fedavg
from consortium.fl.privacy.accountant import PrivacyGuarantee
from consortium.privacy_wire import PrivacySpec

NEEDS_INDIVIDUAL_UPDATES_RULE = "secure aggregation hides individual updates"
"""Why a robust rule (median, Krum, ...) is refused together with distributed noise (secure aggregation)."""


def check_strategy(privacy: PrivacySpec, strategy_name: str, linear: bool, uses_scaffold: bool,
                   secure: bool = False) -> None:
    """FLError naming the spec field unless the strategy (``secure``: with secure aggregation) can be
    combined with these privacy settings."""
    if privacy.noise == "distributed" and not linear:
        raise FLError(
            f"strategy.name: {strategy_name!r} needs individual updates, which privacy.noise = 'distributed' "
            f"forbids ({NEEDS_INDIVIDUAL_UPDATES_RULE}); use a linear rule such as fedavg"
        )
    if privacy.noise == "distributed" and not secure:
        raise FLError("privacy.noise: 'distributed' noise needs secure aggregation "
                      "(strategy.secure_aggregation), else the hub sees each under-noised update")
    if privacy.adaptive_clip is not None and privacy.noise != "central":
        raise FLError("privacy.adaptive_clip: adaptive clipping needs privacy.noise = 'central' (the server "
                      "clips each update and counts the clipped ones; its nodes would need each round's clip)")
    if privacy.noise == "central" and not linear:
        raise FLError(f"strategy.name: central noise is calibrated to the mean of the clipped updates; "
                      f"{strategy_name!r} is not a mean (use fedavg, or privacy.noise = 'local')")
    if strategy_name == "kmeans":
        raise FLError("strategy.name: kmeans updates are sums and counts, not params; DP-FedAvg cannot clip them")
    if uses_scaffold:
        raise FLError("privacy: SCAFFOLD's control variates would leave the node unprivatised; turn SCAFFOLD off")


@dataclass(frozen=True)
class DpPlan:
    """The privacy settings of one run, resolved: sigma, clip, who noises, and the guarantee they give."""

    noise: dp_fedavg.NoiseMode
    clip: float
    noise_multiplier: float
    sampling_rate: float
    rounds: int
    guarantee: PrivacyGuarantee
    expected_clients: int = 1
    """How many clients are expected to finish a round: distributed noise is split among them."""
    adaptive: adaptive_clip.AdaptiveClipping | None = None
    """Adaptive clipping's options (``clip`` is then the round's clip norm, moved by :meth:`next_clip`)."""

    @property
    def update_noise_multiplier(self) -> float:
        """The multiplier of the noise on the update sum: ``noise_multiplier`` itself, or with adaptive
        clipping what is left of it once the clip count's noise is paid for."""
        if self.adaptive is None:
            return self.noise_multiplier
        return adaptive_clip.update_noise_multiplier(self.noise_multiplier, self.adaptive.count_noise_std)

    def with_clip(self, clip: float) -> DpPlan:
        """This plan clipping at ``clip`` (a round's norm under adaptive clipping)."""
        return self if clip == self.clip else replace(self, clip=clip)

    def unclipped_report(self, norms: Sequence[float]) -> float:
        """The sum of the clients' centred reports (+1/2 unclipped, -1/2 clipped) at this plan's clip."""
        return sum(adaptive_clip.clip_indicator(norm, self.clip) for norm in norms)

    def next_clip(self, report: float, num_clients: int, seed: int) -> float:
        """The next round's clip norm from this round's summed reports of ``num_clients`` clients, the count
        noised from ``seed``; this round's clip without adaptive clipping or clients."""
        if self.adaptive is None or num_clients < 1:
            return self.clip
        return adaptive_clip.next_clip(self.clip, report, num_clients, self.adaptive,
                                       torch.Generator().manual_seed(seed))

    @property
    def weight(self) -> int:
        """What each update counts for in the mean (1: every client is one unit of privacy)."""
        return 1

    def client_std(self) -> float:
        """Noise a client adds to its clipped delta (0 with central noise; its share with distributed)."""
        return dp_fedavg.client_noise_std(self.noise, self.update_noise_multiplier, self.clip,
                                          self.expected_clients)

    def client_seed(self, task_seed: int, client_id: str) -> int:
        """A client's noise seed for a task whose own seed is ``task_seed`` (fresh every round)."""
        return derive_seed("dp-noise", task_seed, client_id)

    def privatise_update(self, params: Params, tensors: Mapping[str, torch.Tensor], seed: int) -> Params:
        """A client's trained params with their delta from ``params`` clipped and, with local noise,
        noised from ``seed``: what leaves the node (or what the hub keeps of a central-noise update)."""
        delta = {name: tensors[name] - params[name] for name in params}
        private, _ = dp_fedavg.privatise(delta, self.clip, self.client_std(), seed)
        return {**tensors, **{name: params[name] + private[name] for name in params}}

    def privatise_stacked(
        self, params: Params, stacked: Mapping[str, torch.Tensor], seeds: Sequence[int]
    ) -> tuple[dict[str, torch.Tensor], float]:
        """:meth:`privatise_update` for a chunk of clients stacked on a leading axis (same draws), and the
        chunk's :meth:`unclipped_report`."""
        delta = {name: stacked[name] - params[name].unsqueeze(0) for name in params}
        private, norms = dp_fedavg.privatise_stacked(delta, self.clip, self.client_std(), seeds)
        return ({**stacked, **{name: params[name].unsqueeze(0) + private[name] for name in params}},
                self.unclipped_report(norms.tolist()))

    def server_updates(self, params: Params, updates: Sequence[Update]) -> tuple[list[Update], float]:
        """The round's updates as the server averages them: weight 1 each and, with central noise, clipped
        (local-noise updates were clipped and noised by their node); and their :meth:`unclipped_report`
        (0 unless the server clipped them)."""
        report = 0.0
        if self.noise is dp_fedavg.NoiseMode.CENTRAL:
            clipped = []
            for u in updates:
                delta = {name: u.tensors[name] - params[name] for name in params}
                private, norm = dp_fedavg.privatise(delta, self.clip, 0.0, 0)
                report += adaptive_clip.clip_indicator(norm, self.clip)
                clipped.append(replace(u, tensors={**u.tensors, **{n: params[n] + private[n] for n in params}}))
            updates = clipped
        return [replace(u, num_examples=self.weight) for u in updates], report

    def noised_aggregate(self, params: Params, aggregated: Params, num_clients: int, seed: int) -> Params:
        """The mean of ``num_clients`` clipped updates with the server's central noise ``sigma C / n`` (the
        noise of the sum, divided like it), drawn from ``seed``; unchanged with local noise."""
        std = dp_fedavg.server_noise_std(self.noise, self.update_noise_multiplier, self.clip)
        if std == 0 or num_clients < 1:
            return aggregated
        floating = {name: aggregated[name] for name in params if aggregated[name].is_floating_point()}
        noised = dp_fedavg.add_noise(floating, std / num_clients, seed)
        return {**aggregated, **noised}


def round_noise_seed(run_seed: int, round_number: int, purpose: str = "dp-central-noise") -> int:
    """The seed of the server's central noise in one round (its own stream, apart from every client's;
    ``purpose`` ``dp-clip-count`` for adaptive clipping's count)."""
    return derive_seed(purpose, run_seed, round_number)


@lru_cache(maxsize=256)
def _resolve(spec_json: str, rounds: int, sampling_rate: float, population: int) -> DpPlan:
    privacy = PrivacySpec.model_validate_json(spec_json)
    options = privacy.adaptive_clip
    adaptive = None if options is None else adaptive_clip.AdaptiveClipping(
        privacy.clip, options.target_quantile, options.learning_rate, options.count_noise_std)
    try:
        noise = privacy.noise_multiplier or accountant.noise_multiplier_for(
            privacy.epsilon, privacy.delta, sampling_rate, rounds, privacy.sampling, population)
        guarantee = accountant.guarantee(noise, privacy.clip, sampling_rate, rounds, privacy.delta,
                                         privacy.sampling, population,
                                         mechanism=f"DP-FedAvg (client-level Gaussian, {privacy.noise} noise)")
    except ValueError as exc:
        raise FLError(f"privacy: {exc}") from exc
    if guarantee.epsilon > privacy.epsilon * (1 + 1e-9):
        raise FLError(f"privacy.noise_multiplier: {noise} spends epsilon = {guarantee.epsilon:.4g} over "
                      f"{rounds} rounds, above the target epsilon = {privacy.epsilon}")
    plan = DpPlan(dp_fedavg.NoiseMode(privacy.noise), privacy.clip, noise, sampling_rate, rounds, guarantee,
                  max(1, round(sampling_rate * population)), adaptive)
    try:
        plan.update_noise_multiplier
    except ValueError as exc:
        raise FLError(f"privacy.adaptive_clip.count_noise_std: {exc}") from exc
    return plan


def resolve(privacy: PrivacySpec, rounds: int, sampling_rate: float, population: int) -> DpPlan:
    """The :class:`DpPlan` of ``privacy`` for ``rounds`` rounds sampling ``sampling_rate`` of ``population``
    clients; the accountant runs once per distinct setting (cached). FLError prefixed ``privacy:``."""
    if not (math.isfinite(sampling_rate) and 0 < sampling_rate <= 1):
        raise FLError(f"privacy: the sampling rate must lie in (0, 1], got {sampling_rate}")
    return _resolve(privacy.model_dump_json(), rounds, float(sampling_rate), max(1, population))


def every_round(privacy: PrivacySpec, rounds: int, sources: int) -> DpPlan:
    """The :class:`DpPlan` of a hub run, where every one of the ``sources`` data sources joins every round
    (sampling rate 1)."""
    return resolve(privacy, rounds, 1.0, sources)
