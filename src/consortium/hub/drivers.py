"""The ``Scheduler``: starts and tracks one run driver thread (:mod:`consortium.hub.scheduler`) per running run.

A driver that lost its database (PostgreSQL restarted, the connection cut: :data:`consortium.hub.phases.LEAVE_RUN`)
leaves its run as it is; its thread waits until the database answers again and drives the run anew from its
last checkpoint, as a restarted hub would (the rounds in flight are abandoned and replayed).
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from consortium.hub.db.models import Run
from consortium.hub.scheduler import RunDriver
from consortium.hub.services import run_store
from consortium.hub.state import HubState, progress_key
from consortium.statuses import RunStatus

log = logging.getLogger("consortium.scheduler")

MAX_REDRIVES = 20
"""Consecutive drives that lose the database before the run is failed (a fault that is not an outage)."""


class Scheduler:
    """Starts and tracks one driver thread per running run."""

    def __init__(self, state: HubState) -> None:
        self.state = state
        self._threads: dict[int, threading.Thread] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def resume_all(self) -> None:
        with self.state.sessions() as session:
            ids = list(session.scalars(select(Run.id).where(Run.status == RunStatus.running)))
        for run_id in ids:
            self.ensure(run_id)

    def ensure(self, run_id: int) -> None:
        with self._lock:
            thread = self._threads.get(run_id)
            if thread is not None and thread.is_alive():
                return
            thread = threading.Thread(target=self._drive, args=(run_id,), name=f"run-{run_id}", daemon=True)
            self._threads[run_id] = thread
            thread.start()

    def _drive(self, run_id: int) -> None:
        """Drive the run; again from its last checkpoint whenever a drive ended with the run still running
        (the database went away) and the database answers again."""
        for attempt in range(MAX_REDRIVES + 1):
            RunDriver(self.state, run_id, self._stop)()
            status = self._status_when_back(run_id)
            if status != RunStatus.running:
                return
            if attempt == MAX_REDRIVES:
                break
            log.warning("run %s lost its database; driving it again from its last checkpoint", run_id)
        with self.state.sessions() as session:
            run_store.fail_run(session, run_id, f"the database went away {MAX_REDRIVES + 1} times in a row",
                               self.state.clock())
            session.commit()
        self.state.broker.notify(progress_key(run_id))

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
        for thread in list(self._threads.values()):
            thread.join(timeout)
