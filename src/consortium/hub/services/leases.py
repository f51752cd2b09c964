"""Run leases: with hub replicas on one database, each running run is driven by exactly one replica at a time.

A replica *takes* a run's lease when it is free, expired or its own (one atomic ``UPDATE ... WHERE expires_at
< now OR holder = me``, or the first ``INSERT``; the epoch grows with every take), *renews* it while its driver
runs, and *releases* it when the driver stops. Every write transaction of the driver starts with
:func:`fence`: an ``UPDATE`` of the lease row guarded by (holder, epoch) that also renews it. On PostgreSQL
that row stays locked until the transaction ends, so a takeover waits for it and then sees the renewed
expiry; once anyone took the lease, the stale driver's fenced write finds no row, rolls back and stops
(:class:`LeaseLost`). Expiry times are Unix seconds of the replicas' clocks (keep them in sync, e.g. NTP:
the skew must stay well below the lease's length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consortium.hub.db.lease_models import RunLease
from consortium.hub.db.models import Run
from consortium.statuses import RunStatus

LEASES = RunLease.__table__


def _mine(lease: Lease) -> tuple[Any, ...]:
    """The WHERE clauses of the lease row while ``lease`` is still its current take."""
    return (LEASES.c.run_id == lease.run_id, LEASES.c.holder == lease.holder, LEASES.c.epoch == lease.epoch)


class LeaseLost(Exception):
    """Another replica took the run's lease: this replica's driver must stop without writing."""


@dataclass(frozen=True)
class Lease:
    """The right of ``holder`` to drive run ``run_id`` (its ``epoch``'th take), renewed ``ttl_s`` at a time."""

    run_id: int
    holder: str
    epoch: int
    ttl_s: float


def take(session: Session, run_id: int, holder: str, ttl_s: float, now: float) -> Lease | None:
    """Take the run's lease if it is free, expired or ``holder``'s own (a new epoch); None if another replica
    holds it. Commits."""
    epoch = session.execute(
        update(LEASES).where(LEASES.c.run_id == run_id, or_(LEASES.c.expires_at < now, LEASES.c.holder == holder))
        .values(holder=holder, epoch=LEASES.c.epoch + 1, expires_at=now + ttl_s).returning(LEASES.c.epoch)
    ).scalar()
    if epoch is None:
        if session.scalar(select(LEASES.c.run_id).where(LEASES.c.run_id == run_id)) is not None:
            session.rollback()
            return None
        try:
            session.execute(insert(LEASES).values(run_id=run_id, holder=holder, epoch=1, expires_at=now + ttl_s))
            session.commit()
        except IntegrityError:  # another replica inserted it first
            session.rollback()
            return None
        return Lease(run_id, holder, 1, ttl_s)
    session.commit()
    return Lease(run_id, holder, int(epoch), ttl_s)


def fence(session: Session, lease: Lease, now: float) -> None:
    """In the caller's transaction (call it first): renew ``lease``, or roll back and raise
    :class:`LeaseLost` when another replica took it."""
    written = session.execute(update(LEASES).where(*_mine(lease)).values(expires_at=now + lease.ttl_s)).rowcount
    if not written:
        session.rollback()
        raise LeaseLost(f"run {lease.run_id}: replica {lease.holder} lost its lease (epoch {lease.epoch})")


def renew(session: Session, lease: Lease, now: float) -> bool:
    """Renew ``lease`` (commits); False when another replica took it."""
    try:
        fence(session, lease, now)
    except LeaseLost:
        return False
    session.commit()
    return True


def release(session: Session, lease: Lease) -> None:
    """Let any replica take the run at once (the driver stopped); nothing if the lease moved on. Commits."""
    session.execute(update(LEASES).where(*_mine(lease)).values(expires_at=0.0))
    session.commit()


def takeable(session: Session, now: float) -> list[int]:
    """Running runs whose lease is free or expired, oldest first."""
    return list(session.scalars(
        select(Run.id).outerjoin(LEASES, LEASES.c.run_id == Run.id)
        .where(Run.status == RunStatus.running, or_(LEASES.c.run_id.is_(None), LEASES.c.expires_at < now))
        .order_by(Run.id)
    ))


def holder(session: Session, run_id: int) -> tuple[str, int, float] | None:
    """Who holds the run's lease: (holder, epoch, expires_at), or None."""
    row = session.execute(
        select(LEASES.c.holder, LEASES.c.epoch, LEASES.c.expires_at).where(LEASES.c.run_id == run_id)).first()
    return (row.holder, row.epoch, row.expires_at) if row is not None else None
