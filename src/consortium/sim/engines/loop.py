"""The reference engine: each client's own ``local_update`` in turn, then the strategy's ``aggregate``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from consortium.fl import scaffold
from consortium.fl.cohort import Cohort
from consortium.fl.core import Evaluation, Params, Strategy, Update, stack_updates, weighted_metrics
from consortium.sim.engines.base import FitResult, Setup, check_control_given, client_data


class LoopEngine:
    """The reference: each client's ``local_update`` in turn, then ``strategy.aggregate``.

    With SCAFFOLD it keeps each client's control variate ``c_i`` (zeros until the client first trains).
    """

    name = "loop"

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.client_controls: dict[str, Params] = {}

    def fit(self, params: Params, cohort: Cohort, control: Params | None = None) -> FitResult:
        setup = self.setup
        check_control_given(setup, control)
        updates = [self._local_update(params, cohort, c, control) for c in range(len(cohort))]
        deltas_sum = None
        if control is not None:
            deltas_sum = scaffold.delta_sum(updates)
            updates = [replace(u, tensors=scaffold.split_deltas(u.tensors)[0]) for u in updates]
        if setup.tamper is None:
            return replace(aggregate_updates(setup.strategy, params, updates), control_delta_sum=deltas_sum)
        train = weighted_metrics([Evaluation(u.num_examples, u.metrics) for u in updates])
        stacked = setup.tamper(params, stack_updates(updates))
        return FitResult(
            setup.strategy.aggregate_stacked(params, stacked),
            train.metrics,
            sum(u.num_examples for u in updates),
            deltas_sum,
        )

    def _local_update(self, params: Params, cohort: Cohort, position: int, control: Params | None) -> Update:
        """One client's update; with SCAFFOLD, its ``c_i`` advances by the ``delta_c`` it sends."""
        setup, client_id = self.setup, cohort.client_ids[position]
        data, seed = client_data(setup.train, cohort, position), cohort.seeds[position]
        if control is None:
            update = setup.algorithm.local_update(setup.hp, params, data, seed)
        else:
            own = self.client_controls.get(client_id)
            if own is None:
                own = scaffold.zero_control(params)
            controls = scaffold.Controls(control, own)
            update = setup.algorithm.local_update(setup.hp, params, data, seed, controls=controls)
            self.client_controls[client_id] = scaffold.advanced(own, scaffold.split_deltas(update.tensors)[1])
        return replace(update, client_id=client_id)

    def close(self) -> None:
        pass


def aggregate_updates(strategy: Strategy, params: Params, updates: Sequence[Update]) -> FitResult:
    """Aggregate per-client updates and weigh their training metrics."""
    train = weighted_metrics([Evaluation(u.num_examples, u.metrics) for u in updates])
    return FitResult(strategy.aggregate(params, updates), train.metrics, sum(u.num_examples for u in updates))
