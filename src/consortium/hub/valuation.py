"""Each org's contribution to a run, measured by the hub after each round, off the round's critical path.

A driver that has aggregated a round hands the round's inputs (the params it started from, the updates, who
sent each) to the hub's :class:`Valuer`, one background thread that values rounds in the order they come and
writes each result as a ``round.valued`` ledger entry (``round.not_valued`` with the reason when it cannot).
The driver goes on with the next round at once; only the run's end waits (bounded) for its rounds to be valued,
so the model card carries the totals (:func:`run_contributions`, summed from the ledger entries, so a hub that
restarted mid-run still counts the rounds valued before it stopped).

Values are keyed by dataset reference (``org/name``) per round and summed per org on the card. A run under
secure aggregation hides each update from the hub: its card values each org by the rounds it took part in
(what the hub may see), and says so.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from consortium.contributions import ValueMetric, round_game, value_round
from consortium.fl.core import FLError, LocalData, Params, Update, derive_seed
from consortium.fl.valuation import GtgOptions
from consortium.hub.services import ledger, run_store
from consortium.hub.services.contributions import NOT_VALUED, VALUED, run_contributions
from consortium.plan import RunPlan
from consortium.protocol import ProjectCreate
from consortium.valuation_wire import ValuationSpec

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class RoundJob:
    """What valuing one round needs: the run's plan and valuation spec, the round's starting params and server
    state, its updates and the dataset reference that sent each."""

    run_id: int
    project_id: int
    round_number: int
    plan: RunPlan
    spec: ValuationSpec
    params: Params
    server_state: Params
    updates: Sequence[Update]
    sources: Sequence[str]
    test_data: LocalData


def value_job(job: RoundJob) -> dict[str, Any]:
    """The ledger payload of a valued round (pure but for the time it reports)."""
    started = time.perf_counter()
    metric = ValueMetric.of(job.plan.algorithm.name, job.spec.metric, job.spec.higher_is_better)
    scored = round_game(job.plan, job.params, job.server_state, job.updates, job.test_data, metric)

    def game(coalition: frozenset[int]) -> float:
        time.sleep(0)  # hand the interpreter to a driver between coalitions: its round is on the critical path
        return scored(coalition)

    rng = np.random.default_rng(derive_seed(job.plan.spec.seed, "valuation", job.round_number))
    result = value_round(game, len(job.updates), job.spec.method, rng,
                         GtgOptions(max_permutations=job.spec.max_permutations))
    return {"run_id": job.run_id, "round": job.round_number, "method": job.spec.method, "metric": metric.name,
            "values": {source: float(v) for source, v in zip(job.sources, result.values, strict=True)},
            "coalitions": result.evaluations, "skipped": result.skipped,
            "seconds": round(time.perf_counter() - started, 4)}


class Valuer:
    """One thread valuing the rounds the drivers of this hub hand it, in order."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.jobs: queue.Queue[RoundJob | None] = queue.Queue()
        self.pending: dict[int, int] = {}
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._work, name="valuer", daemon=True)
        self.thread.start()

    def submit(self, job: RoundJob) -> None:
        """Queue a round; returns at once."""
        with self.changed:
            self.pending[job.run_id] = self.pending.get(job.run_id, 0) + 1
        self.jobs.put(job)

    def wait_run(self, run_id: int, timeout: float) -> bool:
        """Wait until every queued round of ``run_id`` is written; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.pending.get(run_id, 0) > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
        return True

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=10)

    def _work(self) -> None:
        _lower_priority()
        while (job := self.jobs.get()) is not None:
            try:
                self._value(job)
            except Exception:  # noqa: BLE001 - one bad round must not stop valuing the others
                log.exception("run %s: valuing round %s failed", job.run_id, job.round_number)
            finally:
                with self.changed:
                    self.pending[job.run_id] -= 1
                    if not self.pending[job.run_id]:
                        del self.pending[job.run_id]
                    self.changed.notify_all()

    def _value(self, job: RoundJob) -> None:
        try:
            event, payload = VALUED, value_job(job)
        except FLError as exc:
            event, payload = NOT_VALUED, {"run_id": job.run_id, "round": job.round_number, "reason": str(exc)}
        with self.sessions() as session:
            ledger.record(session, event, "hub", payload, scope=ledger.project_scope(job.project_id))
            session.commit()


def _lower_priority() -> None:
    """Nice the calling thread (Linux schedules threads as tasks), so valuation takes the CPU the drivers and
    the request handlers leave; elsewhere it runs at the process's priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        log.debug("valuer: thread priority left as it is")


def valued(spec: ProjectCreate, secure: bool, test_data: object) -> bool:
    """Whether a run's rounds go to the valuer: the spec asks, the hub sees each update, a test table exists."""
    return spec.valuation is not None and not secure and isinstance(test_data, LocalData)


CARD_WAIT_S = 120.0
"""How long a finishing run waits for its last rounds to be valued before its card is written without them."""


def card_contributions(valuer: Valuer | None, session: Session, spec: ProjectCreate, project_id: int, run_id: int,
                       *, secure: bool, has_test_set: bool) -> dict[str, Any] | None:
    """The ``contributions`` of a finished run's card; None when the spec asks for no valuation."""
    if spec.valuation is None:
        return None
    if secure:
        return run_contributions(session, project_id, run_id, run_store.rounds_trained(session, run_id))
    if not has_test_set or valuer is None:
        return {"method": None, "values": {}, "note": "not measured: the project has no hub-side test set to "
                                                      "value coalitions on"}
    if not valuer.wait_run(run_id, CARD_WAIT_S):
        log.warning("run %s: rounds still being valued after %ss; the card counts those done", run_id, CARD_WAIT_S)
    return run_contributions(session, project_id, run_id)
