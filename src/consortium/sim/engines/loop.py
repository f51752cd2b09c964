"""The reference engine: each client's own ``local_update`` in turn (privatised as its node would, with local
DP noise, or trained with DP-SGD), then the plan's ``aggregate`` (the hub's own reduction of a round's
updates)."""

from __future__ import annotations

from dataclasses import replace

from consortium.fl import scaffold
from consortium.fl.capabilities import aggregate_stacked
from consortium.fl.cohort import Cohort
from consortium.fl.core import Evaluation, Params, Update, stack_updates, weighted_metrics
from consortium.plan import RoundAggregate
from consortium.sim.engines.base import Setup, check_control_given, client_data


class LoopEngine:
    """The reference: each client's ``local_update`` in turn, then ``RunPlan.aggregate``.

    With SCAFFOLD it keeps each client's control variate ``c_i`` (zeros until the client first trains).
    """

    name = "loop"

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.client_controls: dict[str, Params] = {}

    def fit(self, params: Params, cohort: Cohort, control: Params | None = None,
            clip: float | None = None) -> RoundAggregate:
        setup, plan = self.setup, self.setup.plan.at_clip(clip)
        check_control_given(setup, control)
        updates = [self._local_update(params, cohort, c, control) for c in range(len(cohort))]
        if setup.tamper is None:
            return plan.aggregate(params, updates)
        deltas_sum = scaffold.delta_sum(updates) if control is not None else None
        models = [replace(u, tensors=scaffold.split_deltas(u.tensors)[0]) for u in updates]
        train = weighted_metrics([Evaluation(u.num_examples, u.metrics) for u in models])
        examples = sum(u.num_examples for u in models)
        report = 0.0
        if plan.privacy is not None:
            models, report = plan.privacy.server_updates(params, models)
        stacked = setup.tamper(params, stack_updates(models))
        return RoundAggregate(aggregate_stacked(plan.strategy, params, stacked), train.metrics,
                              examples, deltas_sum, report)

    def _local_update(self, params: Params, cohort: Cohort, position: int, control: Params | None) -> Update:
        """One client's update; with SCAFFOLD, its ``c_i`` advances by the ``delta_c`` it sends."""
        setup, client_id = self.setup, cohort.client_ids[position]
        data, seed = client_data(setup.train, cohort, position), cohort.seeds[position]
        if control is None:
            update = setup.plan.local_update(params, data, seed)
        else:
            own = self.client_controls.get(client_id)
            if own is None:
                own = scaffold.zero_control(params)
            controls = scaffold.Controls(control, own)
            update = setup.plan.algorithm.local_update(setup.plan.hp, params, data, seed, controls=controls)
            self.client_controls[client_id] = scaffold.advanced(own, scaffold.split_deltas(update.tensors)[1])
        privacy = setup.plan.privacy
        if privacy is not None and privacy.client_std() > 0:
            seed = privacy.client_seed(cohort.seeds[position], client_id)
            update = replace(update, tensors=privacy.privatise_update(params, update.tensors, seed))
        return replace(update, client_id=client_id)

    def close(self) -> None:
        pass

