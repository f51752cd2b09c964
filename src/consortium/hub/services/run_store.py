"""A run's rounds in the database, written in the caller's transaction (nothing here commits).

Opening a phase writes the round row (unless the phase joins an existing round, as the final evaluation
does), all its task rows and any ledger entries; closing a round writes its metrics, the previous round's
federated evaluation, the run's checkpoint (params and server-state digests) and the ledger entries. The run
driver commits a round's close together with the next phase's opening: one transaction per round.

The statements are Core statements on the tables, not ORM units of work: they run once per round on the hub's
critical path, and the ORM's bookkeeping cost several times the SQL itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, literal, select, update
from sqlalchemy.orm import Session

from consortium.fl.core import finite_metrics
from consortium.hub.db.models import Round, Run, Task
from consortium.hub.services import ledger
from consortium.statuses import RoundStatus

LedgerEvent = tuple[str, str, dict[str, Any]]
"""``(event_type, actor, payload)`` of one ledger entry to append."""


@dataclass(frozen=True)
class NewTask:
    org_id: int
    dataset_id: int
    seed: int


@dataclass(frozen=True)
class OpenedPhase:
    round_id: int
    task_ids: list[int]


ROUNDS = Round.__table__
TASKS = Task.__table__
RUNS = Run.__table__


def _insert_round(session: Session, run_id: int, number: int, **values: Any) -> int:
    """Insert the next attempt of round ``number`` (attempt = 1 + the latest one's, in the same statement)."""
    columns = {"run_id": literal(run_id), "number": literal(number),
               "attempt": func.coalesce(func.max(ROUNDS.c.attempt), 0) + 1}
    columns.update((name, literal(value, ROUNDS.c[name].type)) for name, value in values.items())
    attempt = select(*(value.label(name) for name, value in columns.items())).where(
        ROUNDS.c.run_id == run_id, ROUNDS.c.number == number
    )
    return session.execute(
        insert(ROUNDS).from_select(list(columns), attempt).returning(ROUNDS.c.id)
    ).scalar_one()


def open_phase(
    session: Session,
    run_id: int,
    number: int,
    kind: str,
    params_sha256: str | None,
    tasks: Sequence[NewTask],
    deadline: datetime,
    *,
    round_id: int | None = None,
    events: Sequence[LedgerEvent] = (),
    scope: ledger.Scope | None = None,
) -> OpenedPhase:
    """Open round ``number`` (a new attempt) with ``tasks``, or add them to round ``round_id``; ``events``
    go to the ledger under ``scope`` (the run's project)."""
    if round_id is None:
        round_id = _insert_round(session, run_id, number)
    task_ids: list[int] = []
    if tasks:
        task_ids = list(session.scalars(
            insert(TASKS).returning(TASKS.c.id, sort_by_parameter_order=True),
            [{"run_id": run_id, "round_id": round_id, "org_id": t.org_id, "dataset_id": t.dataset_id,
              "kind": kind, "params_sha256": params_sha256, "seed": t.seed, "deadline": deadline}
             for t in tasks],
        ))
    if events:
        ledger.record_many(session, events, scope=scope)
    return OpenedPhase(round_id, task_ids)


@dataclass(frozen=True)
class ClosedRound:
    """A closed round's row id and the metrics written with it."""

    round_id: int
    metrics: dict[str, Any] | None


def federated_eval_event(
    session: Session, run_id: int, number: int, metrics: dict[str, float], num_examples: int,
    eval_compute_s: float, closed: ClosedRound | None = None,
) -> LedgerEvent | None:
    """Store the federated evaluation of closed round ``number`` (uncommitted); return its ledger event.

    ``closed``: that round as the caller closed it (saves reading it back). A NaN or infinite metric is left
    out of both and named in the round's ``diverged`` list (and the event's)."""
    if closed is None:
        row = session.execute(
            select(ROUNDS.c.id, ROUNDS.c.metrics)
            .where(ROUNDS.c.run_id == run_id, ROUNDS.c.number == number, ROUNDS.c.status == RoundStatus.closed)
        ).first()
        if row is None:
            return None
        closed = ClosedRound(row.id, row.metrics)
    if closed.metrics is None:
        return None
    metrics, diverged = finite_metrics(metrics, "federated_eval")
    merged = dict(closed.metrics)
    merged.update(federated_eval=metrics, federated_eval_pending=False, max_eval_compute_s=eval_compute_s)
    payload = {"run_id": run_id, "round": number, "federated_eval": metrics, "num_examples": num_examples}
    if diverged:
        merged["diverged"] = [*merged.get("diverged", []), *diverged]
        payload["diverged"] = diverged
    session.execute(update(ROUNDS).where(ROUNDS.c.id == closed.round_id).values(metrics=merged))
    return ("round.evaluated", "hub", payload)


def close_round(
    session: Session,
    run_id: int,
    number: int,
    round_id: int | None,
    *,
    metrics: dict[str, Any] | None,
    params_sha256: str,
    server_state_sha256: str | None,
    now: datetime,
    events: Sequence[LedgerEvent],
    scope: ledger.Scope,
) -> int:
    """Checkpoint: round closed with its metrics, run advanced to ``params_sha256``, ledger events (under
    ``scope``, the run's project).

    Without ``round_id`` (the initial params, when no init phase ran) a closed round row is created.
    """
    if round_id is None:
        round_id = _insert_round(session, run_id, number, status=RoundStatus.closed, closed_at=now, metrics=metrics)
    else:
        session.execute(
            update(ROUNDS).where(ROUNDS.c.id == round_id).values(status=RoundStatus.closed, closed_at=now, metrics=metrics)
        )
    session.execute(
        update(RUNS).where(RUNS.c.id == run_id)
        .values(current_round=number, params_sha256=params_sha256, server_state_sha256=server_state_sha256)
    )
    ledger.record_many(session, events, scope=scope)
    return round_id
