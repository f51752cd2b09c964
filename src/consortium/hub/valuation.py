"""Each org's contribution to a run, measured by the hub after each round, off the round's critical path.

A driver that has aggregated a round hands the round's inputs (the params it started from, the updates, who
sent each) to the hub's :class:`Valuer`, one background thread that values rounds in the order they come, in
a separate niced process (tensors passed as safetensors bytes, :class:`WireJob`), and writes each result as a ``round.valued`` ledger entry (``round.not_valued`` with the reason when it cannot).
The driver goes on with the next round at once; only the run's end waits (bounded) for its rounds to be valued,
so the model card carries the totals (:func:`run_contributions`, summed from the ledger entries, so a hub that
restarted mid-run still counts the rounds valued before it stopped).

Values are keyed by dataset reference (``org/name``) per round and summed per org on the card. A run under
secure aggregation hides each update from the hub: its card values each org by the rounds it took part in
(what the hub may see), and says so.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from consortium.contributions import ValueMetric, round_game, value_round
from consortium.codec import decode_tensors, encode_tensors
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


@dataclass(frozen=True)
class WireJob:
    """A :class:`RoundJob` as plain bytes and JSON (tensors as safetensors), what the valuation process gets."""

    run_id: int
    project_id: int
    round_number: int
    spec_json: str
    num_features: int | None
    clients: int | None
    valuation_json: str
    params: bytes
    server_state: bytes
    updates: tuple[tuple[bytes, int], ...]
    sources: tuple[str, ...]
    test_data: bytes

    @classmethod
    def of(cls, job: RoundJob) -> WireJob:
        return cls(job.run_id, job.project_id, job.round_number, job.plan.spec.model_dump_json(),
                   job.plan.num_features, job.plan.clients, job.spec.model_dump_json(), encode_tensors(job.params),
                   encode_tensors(job.server_state), tuple((encode_tensors(u.tensors), u.num_examples) for u in job.updates),
                   tuple(job.sources), encode_tensors({"x": job.test_data.x, "y": job.test_data.y}))


def value_job(job: RoundJob) -> dict[str, Any]:
    """The ledger payload of a valued round (pure but for the time it reports)."""
    started = time.perf_counter()
    metric = ValueMetric.of(job.plan.algorithm.name, job.spec.metric, job.spec.higher_is_better)
    game = round_game(job.plan, job.params, job.server_state, job.updates, job.test_data, metric)
    rng = np.random.default_rng(derive_seed(job.plan.spec.seed, "valuation", job.round_number))
    result = value_round(game, len(job.updates), job.spec.method, rng,
                         GtgOptions(max_permutations=job.spec.max_permutations))
    return {"run_id": job.run_id, "round": job.round_number, "method": job.spec.method, "metric": metric.name,
            "values": {source: float(v) for source, v in zip(job.sources, result.values, strict=True)},
            "coalitions": result.evaluations, "skipped": result.skipped,
            "seconds": round(time.perf_counter() - started, 4)}


def value_wire_job(wire: WireJob) -> dict[str, Any]:
    """:func:`value_job` of a job rebuilt from its wire form (in the valuation process)."""
    server_state = decode_tensors(wire.server_state)
    plan = RunPlan.of(ProjectCreate.model_validate_json(wire.spec_json), wire.num_features, wire.clients)
    test = decode_tensors(wire.test_data)
    return value_job(RoundJob(
        wire.run_id, wire.project_id, wire.round_number, plan.for_round(server_state) if server_state else plan,
        ValuationSpec.model_validate_json(wire.valuation_json), decode_tensors(wire.params), server_state,
        [Update(decode_tensors(data), examples) for data, examples in wire.updates], wire.sources,
        LocalData(test["x"], test["y"])))


def _start_worker() -> None:
    """The valuation process runs niced, on one torch thread: it takes the CPU the hub and nodes leave."""
    import torch

    torch.set_num_threads(1)
    try:
        os.nice(10)
    except OSError:
        log.debug("valuation process: priority left as it is")


class Valuer:
    """Values the rounds the drivers of this hub hand it, in order: one thread that hands each round to a
    separate, niced process (so valuation never holds the hub's interpreter while a driver closes a round) and
    writes the result to the ledger."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.jobs: queue.Queue[RoundJob | None] = queue.Queue()
        self.pending: dict[int, int] = {}
        self.changed = threading.Condition()
        self.pool: ProcessPoolExecutor | None = None
        """The valuation process, started with the first round to value (a hub that values nothing has none)."""
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
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def _work(self) -> None:
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
        if self.pool is None:
            self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_worker)
        try:
            event, payload = VALUED, self.pool.submit(value_wire_job, WireJob.of(job)).result()
        except BrokenProcessPool:
            self.pool = None  # the process died (killed, out of memory): the next round starts another
            raise
        except FLError as exc:
            event, payload = NOT_VALUED, {"run_id": job.run_id, "round": job.round_number, "reason": str(exc)}
        with self.sessions() as session:
            ledger.record(session, event, "hub", payload, scope=ledger.project_scope(job.project_id))
            session.commit()


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
