"""A run's rounds in the database, written in the caller's transaction (nothing here commits).

Opening a phase writes the round row (unless the phase joins an existing round, as the final evaluation
does), all its task rows and any ledger entries; closing a round writes its metrics, the previous round's
federated evaluation, the run's checkpoint (params and server-state digests) and the ledger entries. The run
driver commits a round's close together with the next phase's opening: one transaction per round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from consortium.hub.db.models import Round, Run, Task
from consortium.hub.services import ledger

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


def _next_attempt(session: Session, run_id: int, number: int) -> int:
    latest = session.scalar(
        select(func.max(Round.attempt)).where(Round.run_id == run_id, Round.number == number)
    )
    return (latest or 0) + 1


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
) -> OpenedPhase:
    """Open round ``number`` (a new attempt) with ``tasks``, or add them to round ``round_id``."""
    if round_id is None:
        rnd = Round(run_id=run_id, number=number, attempt=_next_attempt(session, run_id, number))
        session.add(rnd)
        session.flush()
        round_id = rnd.id
    rows = [
        Task(run_id=run_id, round_id=round_id, org_id=t.org_id, dataset_id=t.dataset_id, kind=kind,
             params_sha256=params_sha256, seed=t.seed, deadline=deadline)
        for t in tasks
    ]
    session.add_all(rows)
    session.flush()
    ledger.record_many(session, events)
    return OpenedPhase(round_id, [row.id for row in rows])


def federated_eval_event(
    session: Session, run_id: int, number: int, metrics: dict[str, float], num_examples: int,
    eval_compute_s: float,
) -> LedgerEvent | None:
    """Store the federated evaluation of closed round ``number`` (uncommitted); return its ledger event."""
    rnd = session.scalar(
        select(Round).where(Round.run_id == run_id, Round.number == number, Round.status == "closed")
    )
    if rnd is None or rnd.metrics is None:
        return None
    merged = dict(rnd.metrics)
    merged.update(federated_eval=metrics, federated_eval_pending=False, max_eval_compute_s=eval_compute_s)
    rnd.metrics = merged
    return ("round.evaluated", "hub",
            {"run_id": run_id, "round": number, "federated_eval": metrics, "num_examples": num_examples})


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
) -> int:
    """Checkpoint: round closed with its metrics, run advanced to ``params_sha256``, ledger events.

    Without ``round_id`` (the initial params, when no init phase ran) a closed round row is created.
    """
    if round_id is None:
        rnd = Round(run_id=run_id, number=number, attempt=_next_attempt(session, run_id, number),
                    status="closed", closed_at=now, metrics=metrics)
        session.add(rnd)
        session.flush()
        round_id = rnd.id
    else:
        session.execute(
            update(Round).where(Round.id == round_id).values(status="closed", closed_at=now, metrics=metrics)
        )
    session.execute(
        update(Run).where(Run.id == run_id)
        .values(current_round=number, params_sha256=params_sha256, server_state_sha256=server_state_sha256)
    )
    ledger.record_many(session, events)
    return round_id
