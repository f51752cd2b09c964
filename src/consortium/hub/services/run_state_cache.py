"""What a replica derives from a run another replica drives, read from the database once per run and
preprocessing state.

The driving replica keeps a run's answer rules and task messages in memory for the whole run; another
replica answering that run's nodes would otherwise read them from the database on every upload and every
task it hands out (the project's proposal, its spec, its sources: linear in the consortium's size, per
node). Both change only when the run's preprocessing is fitted, so that is part of the key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.hub.db.models import Run
from consortium.lru import LRU

T = TypeVar("T")


class RunStateCache(Generic[T]):
    """``build(session, run)`` for a run, kept per (run, fitted or not). Bounded: the ``capacity`` most
    recently used."""

    def __init__(self, build: Callable[[Session, Run], T], capacity: int = 256) -> None:
        self._build = build
        self._items: LRU[tuple[int, bool], T] = LRU(capacity)

    def get(self, session: Session, run_id: int, fitted: bool | None = None) -> T:
        """The run's value; ``fitted`` (whether its preprocessing is), when the caller read it already, saves
        the query for it."""
        if fitted is None:
            row = session.execute(select(Run.preprocessing).where(Run.id == run_id)).first()
            if row is None:
                raise LookupError(f"run {run_id} does not exist")
            fitted = row.preprocessing is not None
        key = (run_id, fitted)
        value = self._items.get(key)
        if value is None:
            value = self._build(session, session.get(Run, run_id))
            self._items.put(key, value)
        return value
