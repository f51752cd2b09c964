"""The run driver's secure aggregation: after a fit phase's nodes have trained (and sent their metrics, but
no tensors), the hub runs the SecAgg+ server's four stages with them, each under its own deadline, and turns
the unmasked sum into the round's aggregate: the mean of the survivors' deltas, each node counting once.

A node that misses a stage is a dropout for the rest of the round, and the driver leaves it out of the next
phases until it polls again (as a node dropped at the round timeout): a dead node then costs no later round
its timeout. With fewer than the threshold left the round aborts: nothing is unmasked, a ``round.secagg_aborted`` ledger entry says why, and the driver treats
the round as one without updates (its min_nodes policy then fails the run, as for any failed round).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from consortium.fl.core import Evaluation, Params, weighted_metrics
from consortium.fl.privacy.secagg.errors import SecAggAborted
from consortium.fl.privacy.secagg.quantise import unflatten
from consortium.fl.privacy.secagg.setup import RoundSetup, plan_round
from consortium.hub.live import Answer
from consortium.hub.phases import OpenPhase, Participant, StopRequested
from consortium.hub.secagg import SecAggRound
from consortium.hub.services import ledger
from consortium.hub.state import HubState
from consortium.plan import RoundAggregate, RunPlan
from consortium.protocol import TaskKind


@dataclass(frozen=True)
class Secured:
    """A round's secure aggregation done: the answers summed (``U3``), the nodes that trained but dropped
    out, the aggregate (None after an abort), what the ledger says of it, why it aborted, and the nodes
    that missed a stage's message (dropped out, or summed but silent in the unmask stage)."""

    done: list[tuple[Participant, Answer]]
    dropped: list[Participant]
    aggregate: RoundAggregate | None
    summary: dict[str, Any]
    failure: str | None = None
    missed: list[Participant] = field(default_factory=list)


class SecureRounds:
    """The secure aggregation of one run's fit rounds (see the module)."""

    def __init__(self, state: HubState, stop: threading.Event, plan: RunPlan, run_id: int, project_id: int,
                 fence: Callable[[Session], None] = lambda _session: None) -> None:
        spec = plan.spec.strategy.secure_aggregation
        assert spec is not None
        self.state, self.stop, self.plan, self.spec = state, stop, plan, spec
        self.run_id, self.project_id, self.fence = run_id, project_id, fence
        self.open: dict[int, SecAggRound] = {}
        """The registered rounds not closed yet, by round id."""

    def expect(self, phase: OpenPhase) -> None:
        """Register a fit phase's round, so that nodes done training early find it."""
        if phase.kind != TaskKind.fit:
            return
        members = {task_id: p.org_id for task_id, p in phase.participants.items()}
        secagg_round = self.open[phase.round_id] = SecAggRound(phase.round_id, members, self.state.broker.notify)
        for task_id in members:
            self.state.secagg[task_id] = secagg_round

    def close(self, phase: OpenPhase, done: list[tuple[Participant, Answer]], params: Params) -> Secured:
        """Run the four stages with the nodes of ``done`` and aggregate (see the module)."""
        secagg_round = self.open.get(phase.round_id)
        if secagg_round is None:
            return Secured([], [p for p, _ in done], None, {"nodes": len(done)}, "no secure aggregation was open")
        try:
            return self._run(secagg_round, phase, done, params)
        finally:
            self._end(secagg_round, f"round {phase.number}'s secure aggregation is over")

    def forget(self) -> None:
        """End every round still registered (the driver stops): their nodes' long polls answer 410."""
        for secagg_round in list(self.open.values()):
            self._end(secagg_round, "the run's driver stopped")

    def _end(self, secagg_round: SecAggRound, why: str) -> None:
        secagg_round.end(why)
        self.open.pop(secagg_round.round_id, None)
        for task_id in secagg_round.members:
            self.state.secagg.pop(task_id, None)

    def _run(self, secagg_round: SecAggRound, phase: OpenPhase, done: list[tuple[Participant, Answer]],
             params: Params) -> Secured:
        by_client = {str(answer.task_id): (p, answer) for p, answer in done}
        summary: dict[str, Any] = {"nodes": len(done), "survived": {}, "dropped_at": {}}
        length = sum(t.numel() for t in params.values())
        expected = set(by_client)
        missed: set[str] = set()
        try:
            setup = plan_round(self.spec, phase.round_id, sorted(by_client), length, self.plan.spec.seed)
            summary["threshold"], summary["bits"] = setup.config.threshold, setup.bits
            deadline = self._deadline()
            secagg_round.start(setup)
            server = secagg_round.server
            for stage, close, published in (("advertise_keys", server.close_advertise, "keys"),
                                            ("share_keys", server.close_share_keys, "shares"),
                                            ("masked_input", server.close_masked_input, "unmask"),
                                            ("unmask", server.close_unmask, None)):
                self._wait(secagg_round, stage, expected, deadline)
                try:
                    result = secagg_round.close(close)
                finally:  # what the stage closed with (a message racing the close is refused, or counted)
                    arrived = secagg_round.arrived(stage)
                    summary["survived"][stage] = len(arrived)
                    if expected - arrived:
                        summary["dropped_at"][stage] = sorted(by_client[c][0].ref for c in expected - arrived)
                        missed |= expected - arrived
                deadline = self._deadline()  # a stage's time starts before its input is published
                if published is not None:
                    secagg_round.publish(published, result)
                expected = set(server.survivors) if stage == "masked_input" else arrived
        except SecAggAborted as exc:
            return replace(self._aborted(phase, done, summary, secagg_round, str(exc)),
                           missed=[by_client[c][0] for c in sorted(missed)])
        survivors = [by_client[c] for c in server.survivors]
        summary.update(refused=secagg_round.refused, refusals=secagg_round.refusals)
        aggregate = self._aggregate(setup, result, survivors, params)
        dropped = [p for p, a in done if str(a.task_id) not in server.survivors]
        return Secured(survivors, dropped, aggregate, summary, missed=[by_client[c][0] for c in sorted(missed)])

    def _deadline(self) -> datetime:
        return self.state.clock() + timedelta(seconds=self.spec.stage_timeout_s)

    def _wait(self, secagg_round: SecAggRound, stage: str, expected: set[str], deadline: datetime) -> None:
        """Until every expected message of ``stage`` is in or its ``deadline`` (hub clock) passes."""
        while True:
            remaining = (deadline - self.state.clock()).total_seconds()
            if secagg_round.wait(stage, expected, min(remaining, self.state.recheck_s)):
                return
            if self.stop.is_set():
                raise StopRequested
            if self.state.clock() >= deadline:
                return

    def _aggregate(self, setup: RoundSetup, total: np.ndarray, survivors: list[tuple[Participant, Answer]],
                   params: Params) -> RoundAggregate:
        """The mean of the survivors' deltas added to ``params``; their metrics weighted by examples."""
        count = len(survivors)
        mean = unflatten(setup.quantiser().dequantise_sum(total, count) / count, params)
        aggregated = {name: params[name] + mean[name] for name in params}
        train = weighted_metrics([Evaluation(a.result["num_examples"], a.result["metrics"]) for _, a in survivors])
        return RoundAggregate(aggregated, train.metrics, sum(a.result["num_examples"] for _, a in survivors))

    def _aborted(self, phase: OpenPhase, done: list[tuple[Participant, Answer]], summary: dict[str, Any],
                 secagg_round: SecAggRound, why: str) -> Secured:
        summary.update(aborted=why, refused=secagg_round.refused, refusals=secagg_round.refusals)
        with self.state.sessions() as session:
            self.fence(session)
            ledger.record(session, "round.secagg_aborted", "hub",
                          {"run_id": self.run_id, "round": phase.number, "secure_aggregation": summary},
                          scope=ledger.project_scope(self.project_id))
            session.commit()
        return Secured([], [p for p, _ in done], None, summary, why)
