"""The ``Scheduler``: starts and tracks one run driver thread (:mod:`consortium.hub.scheduler`) per running run.

One hub (no :class:`~consortium.hub.state.Replication`) drives every running run: those it finds at start
(:meth:`Scheduler.resume_all`, replaying from their checkpoints) and each run started through it. Replicas
drive only the runs whose lease they hold (:mod:`consortium.hub.services.leases`): a keeper thread renews them
every third of the lease's length (a driver whose lease was taken is stopped), and takes over the free and
expired ones, so a killed replica's runs are replayed from their last checkpoint by another replica after at
most the lease's length.

A driver that lost its database (PostgreSQL restarted, the connection cut: :data:`consortium.hub.phases.LEAVE_RUN`)
leaves its run as it is. One hub waits until the database answers again and drives the run anew from its last
checkpoint, as a restarted hub would (the rounds in flight are abandoned and replayed); a replica lets its
lease go, and the keeper (of this replica or another) takes the run over as it does a dead replica's.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from consortium.hub.db.models import Run
from consortium.hub.scheduler import RunDriver
from consortium.hub.services import leases, run_store
from consortium.hub.state import HubState, progress_key
from consortium.statuses import RunStatus

log = logging.getLogger("consortium.scheduler")


MAX_REDRIVES = 20
"""Consecutive drives that lose the database before the run is failed (a fault that is not an outage)."""


@dataclass
class _Driving:
    thread: threading.Thread
    stop: threading.Event
    lease: leases.Lease | None


class Scheduler:
    """Starts and tracks one driver thread per running run (per leased run with replicas)."""

    def __init__(self, state: HubState) -> None:
        self.state = state
        self._driving: dict[int, _Driving] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._keeper: threading.Thread | None = None

    def resume_all(self) -> None:
        """Drive the running runs: all of them (one hub), or with replicas those whose lease this replica
        takes now and later (the keeper thread)."""
        if self.state.replication is not None:
            self._keeper = threading.Thread(target=self._keep, name="run-leases", daemon=True)
            self._keeper.start()
            return
        with self.state.sessions() as session:
            ids = list(session.scalars(select(Run.id).where(Run.status == RunStatus.running)))
        for run_id in ids:
            self.ensure(run_id)

    def ensure(self, run_id: int) -> bool:
        """Drive ``run_id`` unless a driver of this process already does (with replicas: only if this replica
        takes its lease); whether this process drives it now."""
        with self._lock:
            driving = self._driving.get(run_id)
            if driving is not None and driving.thread.is_alive():
                return True
            if self._stop.is_set():
                return False
            lease = None
            replication = self.state.replication
            if replication is not None:
                with self.state.sessions() as session:
                    lease = leases.take(session, run_id, replication.replica_id, replication.lease_s, time.time())
                if lease is None:
                    return False
                log.info("run %s: driven by replica %s (lease epoch %s)", run_id, lease.holder, lease.epoch)
            stop = threading.Event()
            thread = threading.Thread(target=self._drive, args=(run_id, stop, lease), name=f"run-{run_id}",
                                      daemon=True)
            self._driving[run_id] = _Driving(thread, stop, lease)
            thread.start()
            return True

    def driving(self) -> list[int]:
        """The runs a driver of this process drives now."""
        with self._lock:
            return sorted(i for i, d in self._driving.items() if d.thread.is_alive())

    def _drive(self, run_id: int, stop: threading.Event, lease: leases.Lease | None) -> None:
        """Drive the run. One hub drives it again from its last checkpoint whenever a drive ended with the run
        still running (the database went away) and the database answers again; a replica releases its lease
        instead (if it can), and a keeper takes the run over."""
        try:
            if lease is not None:
                RunDriver(self.state, run_id, stop, lease)()
                return
            for attempt in range(MAX_REDRIVES + 1):
                RunDriver(self.state, run_id, stop, None)()
                if self._status_when_back(run_id) != RunStatus.running or stop.is_set():
                    return
                if attempt < MAX_REDRIVES:
                    log.warning("run %s lost its database; driving it again from its last checkpoint", run_id)
            with self.state.sessions() as session:
                run_store.fail_run(session, run_id, f"the database went away {MAX_REDRIVES + 1} times in a row",
                                   self.state.clock())
                session.commit()
            self.state.broker.notify(progress_key(run_id))
        finally:
            if lease is not None:
                try:
                    with self.state.sessions() as session:
                        leases.release(session, lease)
                except Exception:  # the lease then expires on its own
                    log.exception("run %s: releasing its lease failed", lease.run_id)

    def _keep(self) -> None:
        """Renew this replica's leases (stopping a driver whose lease was taken) and take over free or expired
        ones, every third of the lease's length."""
        replication = self.state.replication
        assert replication is not None
        while not self._stop.is_set():
            try:
                self._renew()
                with self.state.sessions() as session:
                    takeable = leases.takeable(session, time.time())
                for run_id in takeable:
                    self.ensure(run_id)
            except Exception:  # the database may be away for a moment: try again at the next tick
                log.exception("run leases: renewal or takeover failed")
            self._stop.wait(replication.lease_s / 3)

    def _renew(self) -> None:
        with self._lock:
            held = [(run_id, d) for run_id, d in self._driving.items() if d.thread.is_alive() and d.lease is not None]
        for run_id, driving in held:
            assert driving.lease is not None
            with self.state.sessions() as session:
                kept = leases.renew(session, driving.lease, time.time())
            if not kept:
                log.warning("run %s: another replica took its lease; this replica stops driving it", run_id)
                driving.stop.set()

    def _status_when_back(self, run_id: int) -> str | None:
        """The run's status once the database answers (None when the hub is stopping)."""
        wait = 0.1
        while not self._stop.is_set():
            try:
                with self.state.sessions() as session:
                    return session.scalar(select(Run.status).where(Run.id == run_id))
            except OperationalError:
                self._stop.wait(wait)
                wait = min(2 * wait, 2.0)
        return None

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            driving = list(self._driving.values())
        for d in driving:
            d.stop.set()
        for d in driving:
            d.thread.join(timeout)
        if self._keeper is not None:
            self._keeper.join(timeout)
