"""The ``Scheduler``: starts and tracks one run driver thread (:mod:`consortium.hub.scheduler`) per running run."""

from __future__ import annotations

import threading

from sqlalchemy import select

from consortium.hub.db.models import Run
from consortium.hub.scheduler import RunDriver
from consortium.hub.state import HubState
from consortium.statuses import RunStatus


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
            driver = RunDriver(self.state, run_id, self._stop)
            thread = threading.Thread(target=driver, name=f"run-{run_id}", daemon=True)
            self._threads[run_id] = thread
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in list(self._threads.values()):
            thread.join(timeout)
