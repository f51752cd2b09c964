"""One run's plan: the chain spec -> algorithm, hyper-parameters, strategy, server step, resolved once, and
the math that closes a round.

The hub's run driver, the project and run services, the node agent, the simulator (and its engines) and the
model outputs all build a :class:`RunPlan` from a :class:`~consortium.protocol.ProjectCreate` instead of
resolving the chain themselves, and both the hub and the simulator close a round through
:meth:`RunPlan.close_round`, so a simulated run and a real run execute the same math by construction, not by
convention. Pure like :mod:`consortium.fl`: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from consortium.fl import scaffold
from consortium.fl.data import train_rows
from consortium.fl.core import (
    Algorithm,
    Evaluation,
    FLError,
    LocalData,
    Params,
    Strategy,
    Update,
    finite_metrics,
    parse_hyperparams,
    weighted_metrics,
)
from consortium.fl.privacy import dp_sgd
from consortium.fl.privacy import spec as privacy_spec
from consortium.fl.privacy.secagg import setup as secagg_setup
from consortium.fl.privacy.spec import DpPlan
from consortium.fl.registry import (
    get_algorithm,
    get_server_optimizer,
    get_strategy,
    server_optimizer_names,
    strategy_names,
)
from consortium.fl.server_optimizers import ServerOptimizer, ServerStep
from consortium.protocol import ProjectCreate

if TYPE_CHECKING:
    from consortium.fl.environments import LocalEnvironment


@dataclass(frozen=True)
class RoundAggregate:
    """A round's updates reduced: the strategy's aggregate (before the server step), the example-weighted
    training metrics, the examples counted and, with SCAFFOLD, the float64 ``sum_i delta_c_i``.

    The hub gets it from :meth:`RunPlan.aggregate`; a simulator engine may reduce its cohort its own way
    (chunk by chunk, shard by shard) as long as it hands the close the same thing."""

    aggregated: Params
    train_metrics: dict[str, float]
    num_examples: int
    control_delta_sum: Params | None = None
    unclipped_report: float = 0.0
    """Adaptive clipping: the sum of the clients' centred reports (+1/2 unclipped, -1/2 clipped)."""
    next_clip: float | None = None
    """Adaptive clipping: the next round's clip norm, set with the round's noise (:meth:`RunPlan.noised`)."""


CLIP_KEY = "dp.adaptive_clip"
"""The server state's entry holding the round's clip norm under adaptive clipping (a float64 scalar)."""


@dataclass(frozen=True)
class RoundScores:
    """A closed round's finite metrics; those that are NaN or infinite are named (``train.x``, ``test.y``)."""

    train: dict[str, float]
    test: dict[str, float]
    diverged: list[str] = field(default_factory=list)


def _resolved(what: str, resolve: Any) -> Any:
    """``resolve()``; its FLError prefixed with the spec field ``what`` that caused it."""
    try:
        return resolve()
    except FLError as exc:
        raise FLError(f"{what}: {exc}") from exc


@dataclass(frozen=True)
class RunPlan:
    """A project spec resolved: who trains (algorithm and hyper-parameters), how the updates are combined
    (strategy) and how the params move (server optimiser, SCAFFOLD's control step).

    ``num_features`` (the width of the data) is needed to initialise server-side params, ``clients`` (the
    run's data sources, SCAFFOLD's ``N``) to close a SCAFFOLD round; a caller that does neither (a node) may
    leave them out.
    """

    spec: ProjectCreate
    algorithm: Algorithm
    hp: Any
    strategy_name: str
    strategy: Strategy
    optimizer: ServerOptimizer | None
    num_features: int | None = None
    clients: int | None = None
    privacy: DpPlan | None = None
    """Client-level DP resolved (noise multiplier derived once); None when the spec asks for none."""

    @classmethod
    def of(cls, spec: ProjectCreate, num_features: int | None = None, clients: int | None = None,
           sampling: tuple[float, int] | None = None) -> RunPlan:
        """The plan of ``spec``; FLError naming the spec field at fault (``algorithm.name``, ...). Its privacy
        is accounted for clients sampled at ``sampling = (rate, population)`` each round; by default (a hub
        run) every data source joins every round."""
        algorithm = _resolved("algorithm.name", lambda: get_algorithm(spec.algorithm.name))
        hp = _resolved("algorithm.hyperparameters",
                       lambda: parse_hyperparams(algorithm, spec.algorithm.hyperparameters))
        name = spec.strategy.name or algorithm.default_strategy
        strategy = _resolved("strategy.options" if name in strategy_names() else "strategy.name",
                             lambda: get_strategy(name, **spec.strategy.options))
        chosen = spec.strategy.server_optimizer
        optimizer = None
        if chosen is not None:
            where = ("strategy.server_optimizer.options" if chosen.name in server_optimizer_names()
                     else "strategy.server_optimizer.name")
            optimizer = _resolved(where, lambda: get_server_optimizer(chosen.name, **chosen.options))
        plan = cls(spec, algorithm, hp, name, strategy, optimizer)
        if spec.strategy.secure_aggregation is not None:
            secagg_setup.check_spec(spec.strategy.secure_aggregation, len(spec.datasets or spec.environments),
                                    name, bool(getattr(strategy, "linear", False)), plan.uses_scaffold,
                                    spec.privacy.noise if spec.privacy and not plan.sample_level else None)
        if spec.privacy is not None:
            plan = plan.sampled(*(sampling or (1.0, len(spec.datasets or spec.environments))))
        return plan.knowing(num_features, clients)

    def sampled(self, sampling_rate: float, population: int) -> RunPlan:
        """This plan with its privacy resolved for clients sampled at ``sampling_rate`` of ``population``
        each round (the hub: every data source, rate 1; the simulator: its cohort). FLError naming the field."""
        privacy = self.spec.privacy
        if privacy is None:
            return self
        if self.sample_level:
            dp_sgd.check_run(self.algorithm, self.hp, self.uses_scaffold)
            return self
        privacy_spec.check_strategy(privacy, self.strategy_name, bool(getattr(self.strategy, "linear", False)),
                                    self.uses_scaffold, self.secure)
        return replace(self, privacy=privacy_spec.resolve(privacy, self.spec.rounds, sampling_rate, population))

    def knowing(self, num_features: int | None, clients: int | None) -> RunPlan:
        """This plan once the data is known: its width and the number of data sources (SCAFFOLD's N)."""
        if clients is not None and clients < 1:
            raise FLError(f"datasets: a run needs at least one data source, got {clients}")
        return replace(self, num_features=num_features, clients=clients)

    @property
    def sample_level(self) -> bool:
        """True when the spec asks for sample-level DP-SGD in each node's training (``privacy`` then stays
        None: nothing is clipped or noised after training)."""
        return self.spec.privacy is not None and self.spec.privacy.mechanism == dp_sgd.MECHANISM

    @property
    def private(self) -> bool:
        """True when the run has differential privacy of either kind."""
        return self.spec.privacy is not None

    def dp_sgd_plan(self, rows: int) -> dp_sgd.DpSgdPlan:
        """DP-SGD resolved for a dataset of ``rows`` rows (its own noise multiplier); FLError ``privacy:``."""
        if not self.sample_level:
            raise FLError("privacy.mechanism: this run does not train with DP-SGD")
        assert self.spec.privacy is not None
        return dp_sgd.resolve(self.spec.privacy, self.spec.rounds, rows, self.hp.batch_size,
                              self.hp.local_epochs)

    def dp_sgd_plan_of_source(self, rows: int) -> dp_sgd.DpSgdPlan:
        """DP-SGD resolved for a data source of ``rows`` rows (its card's), of which a node trains on what the
        spec's validation split leaves (:func:`consortium.fl.data.train_rows`)."""
        return self.dp_sgd_plan(train_rows(rows, self.spec.validation_fraction))

    def local_update(self, params: Params, data: LocalData | LocalEnvironment, seed: int) -> Update:
        """One data source's local training without SCAFFOLD: the algorithm's own, or DP-SGD on its rows when
        the spec asks (a source without rows trains on nothing and returns the params untouched either way)."""
        if self.sample_level and len(data):
            return self.algorithm.local_update_dp_sgd(self.hp, params, data, seed, self.dp_sgd_plan(len(data)))
        return self.algorithm.local_update(self.hp, params, data, seed)

    @property
    def secure(self) -> bool:
        """True when updates are summed under secure aggregation (each then counts once in the mean)."""
        return self.spec.strategy.secure_aggregation is not None

    @property
    def uses_scaffold(self) -> bool:
        """True when clients train with SCAFFOLD control variates (the server keeps ``c``)."""
        return scaffold.uses_scaffold(self.algorithm, self.hp)

    @property
    def server(self) -> ServerStep:
        """The server's step: the optimiser (or plain replacement) and, with SCAFFOLD, ``c``'s step over N."""
        if self.uses_scaffold and self.clients is None:
            raise FLError("SCAFFOLD's server step needs the number of clients N; build the plan with clients")
        return ServerStep(self.optimizer, self.clients if self.uses_scaffold else None)

    @property
    def stateful(self) -> bool:
        """True when the server keeps state between rounds (optimiser slots, SCAFFOLD's ``c``, the clip norm
        of adaptive clipping)."""
        return self.optimizer is not None or self.uses_scaffold or self.adaptive_clip

    @property
    def adaptive_clip(self) -> bool:
        """True when the DP clip norm moves each round (kept in the server state under :data:`CLIP_KEY`)."""
        return self.privacy is not None and self.privacy.adaptive is not None

    def for_round(self, server_state: Params) -> RunPlan:
        """This plan clipping at the round's norm held in ``server_state`` (itself without adaptive clipping)."""
        return self.at_clip(float(server_state[CLIP_KEY])) if self.adaptive_clip else self

    def at_clip(self, clip: float | None) -> RunPlan:
        """This plan clipping at ``clip`` (a round's norm under adaptive clipping); itself for None."""
        if clip is None or self.privacy is None:
            return self
        return replace(self, privacy=self.privacy.with_clip(clip))

    @staticmethod
    def _server_part(server_state: Params) -> Params:
        """The state the server step keeps (without adaptive clipping's norm)."""
        return {name: t for name, t in server_state.items() if name != CLIP_KEY}

    def init_params(self, client_inits: Sequence[Update] = ()) -> Params:
        """The global params before round 1: the algorithm's ``init`` on the server, or, for an algorithm
        initialised by its clients (k-means seeding), built from their init updates."""
        if self.algorithm.needs_client_init:
            if not client_inits:
                raise FLError(f"the {self.algorithm.name} algorithm is initialised from its clients' updates")
            return self.algorithm.init_from_updates(self.hp, client_inits, self.spec.seed)
        if self.num_features is None:
            raise FLError("initialising the params needs the number of features; build the plan with it")
        return self.algorithm.init(self.hp, self.num_features, self.spec.seed)

    def init_server_state(self, params: Params) -> Params:
        """The server state before round 1 (empty when the server keeps none)."""
        state = self.server.init_state(params)
        if self.adaptive_clip:
            assert self.privacy is not None
            state[CLIP_KEY] = torch.tensor(self.privacy.clip, dtype=torch.float64)
        return state

    def control(self, server_state: Params) -> Params | None:
        """SCAFFOLD's server control variate ``c`` in ``server_state`` (None without SCAFFOLD)."""
        return self.server.control(self._server_part(server_state))

    def broadcast(self, params: Params, server_state: Params) -> Params:
        """What a fit task carries: the params, plus ``c`` with SCAFFOLD."""
        return self.server.broadcast(params, self._server_part(server_state))

    def aggregate(self, params: Params, updates: Sequence[Update]) -> RoundAggregate:
        """The round's updates reduced by the strategy (their SCAFFOLD ``delta_c`` summed apart, never
        aggregated as if they were params) with their example-weighted training metrics."""
        deltas = None
        if self.uses_scaffold:
            deltas = scaffold.delta_sum(updates)
            updates = [replace(u, tensors=scaffold.split_deltas(u.tensors)[0]) for u in updates]
        train = weighted_metrics([Evaluation(u.num_examples, u.metrics) for u in updates])
        examples = sum(u.num_examples for u in updates)
        report = 0.0
        if self.privacy is not None:
            updates, report = self.privacy.server_updates(params, updates)
        elif self.secure:
            updates = [replace(u, num_examples=1) for u in updates]
        return RoundAggregate(self.strategy.aggregate(params, updates), train.metrics, examples, deltas, report)

    def noised(self, params: Params, aggregate: RoundAggregate, num_clients: int, round_number: int) -> RoundAggregate:
        """The aggregate with the server's central DP noise (its own seed per round) and, with adaptive
        clipping, the next round's clip from the noisy count of unclipped updates; as is otherwise."""
        if self.privacy is None:
            return aggregate
        seed = privacy_spec.round_noise_seed(self.spec.seed, round_number)
        next_clip = None
        if self.adaptive_clip:
            count_seed = privacy_spec.round_noise_seed(self.spec.seed, round_number, "dp-clip-count")
            next_clip = self.privacy.next_clip(aggregate.unclipped_report, num_clients, count_seed)
        return replace(aggregate, aggregated=self.privacy.noised_aggregate(
            params, aggregate.aggregated, num_clients, seed), next_clip=next_clip)

    def close_round(
        self, params: Params, aggregate: RoundAggregate, server_state: Params
    ) -> tuple[Params, Params]:
        """The next global params and server state: the server step from ``params`` towards the aggregate
        (plain replacement without an optimiser) and, with SCAFFOLD, ``c <- c + sum_i(delta_c_i) / N``; with
        adaptive clipping the state carries the next round's clip norm."""
        new_params, state = self.server.step(params, aggregate.aggregated, self._server_part(server_state),
                                             aggregate.control_delta_sum)
        if self.adaptive_clip:
            clip = aggregate.next_clip if aggregate.next_clip is not None else server_state[CLIP_KEY]
            state[CLIP_KEY] = torch.as_tensor(clip, dtype=torch.float64)
        return new_params, state

    def scores(
        self, params: Params, train_metrics: Mapping[str, float],
        test_data: LocalData | LocalEnvironment | None,
    ) -> RoundScores:
        """The round's training metrics and the new params' metrics on ``test_data`` (none without it); a
        NaN or infinite one (the model diverged) is left out and named in ``diverged``."""
        test = self.algorithm.evaluate(self.hp, params, test_data).metrics if test_data is not None else {}
        train, diverged_train = finite_metrics(train_metrics, "train")
        test, diverged_test = finite_metrics(test, "test")
        return RoundScores(train, test, diverged_train + diverged_test)
