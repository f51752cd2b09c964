"""Run leases on both backends: one holder at a time, takeover only after expiry, and a stale holder's fenced
write rolls back (nothing it wrote in that transaction is kept)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from consortium.hub.db.models import Project, Run
from consortium.hub.services import leases
from consortium.hub.services.leases import LeaseLost

TTL = 10.0
NOW = 1_900_000_000.0


def _run(session: Session, status: str = "running") -> int:
    project = Project(name=f"p{session.scalar(select(Project.id).order_by(Project.id.desc())) or 0}",
                      spec={}, spec_hash="1" * 64, proposer="admin", status="approved")
    session.add(project)
    session.flush()
    run = Run(project_id=project.id, status=status)
    session.add(run)
    session.commit()
    return run.id


def test_one_holder_at_a_time_and_takeover_after_expiry(session: Session) -> None:
    run_id = _run(session)
    a = leases.take(session, run_id, "a", TTL, NOW)
    assert a is not None and a.epoch == 1
    assert leases.take(session, run_id, "b", TTL, NOW + TTL - 0.1) is None, "the lease has not expired"
    assert leases.renew(session, a, NOW + 5)
    assert leases.take(session, run_id, "b", TTL, NOW + TTL + 1) is None, "a renewed it"
    b = leases.take(session, run_id, "b", TTL, NOW + 5 + TTL + 0.1)
    assert b is not None and b.epoch == 2
    assert not leases.renew(session, a, NOW + 20), "a lost it"
    assert leases.holder(session, run_id) == ("b", 2, NOW + 5 + 2 * TTL + 0.1)
    again = leases.take(session, run_id, "b", TTL, NOW + 21)
    assert again is not None and again.epoch == 3, "a new driver of the same replica fences the old one"
    leases.release(session, again)
    assert leases.take(session, run_id, "c", TTL, NOW + 22).epoch == 4, "released: anyone takes it at once"


def test_a_stale_holders_fenced_write_rolls_back(session: Session) -> None:
    run_id = _run(session)
    a = leases.take(session, run_id, "a", TTL, NOW)
    b = leases.take(session, run_id, "b", TTL, NOW + TTL + 1)
    assert b is not None
    session.execute(update(Run).where(Run.id == run_id).values(current_round=7))
    with pytest.raises(LeaseLost, match="replica a lost its lease"):
        leases.fence(session, a, NOW + TTL + 2)
    assert session.scalar(select(Run.current_round).where(Run.id == run_id)) == -1
    leases.fence(session, b, NOW + TTL + 2)
    session.commit()


def test_takeable_lists_running_runs_without_a_live_lease(session: Session) -> None:
    free, held, expired, done = _run(session), _run(session), _run(session), _run(session, "completed")
    leases.take(session, held, "a", TTL, NOW)
    leases.take(session, expired, "a", 1.0, NOW)
    assert leases.takeable(session, NOW + 2) == [free, expired]
    assert done not in leases.takeable(session, NOW + 2)


@pytest.mark.postgres
def test_a_takeover_waits_for_the_holders_open_transaction(db_url: str) -> None:
    """PostgreSQL: the holder fenced its transaction just before its lease expired; a takeover racing it
    blocks on the row until the holder commits, then sees the renewed expiry and fails."""
    if not db_url.startswith("postgresql"):
        pytest.skip("row locks: PostgreSQL only")
    from consortium.hub.db.session import make_engine, migrate, session_factory

    engine = make_engine(db_url)
    migrate(engine)
    sessions = session_factory(engine)
    with sessions() as setup:
        run_id = _run(setup)
        a = leases.take(setup, run_id, "a", TTL, NOW)
    result: list[object] = []
    with sessions() as holder:
        leases.fence(holder, a, NOW + TTL - 0.5)
        racer = threading.Thread(target=lambda: result.append(_take(sessions, run_id)))
        racer.start()
        racer.join(0.5)
        assert racer.is_alive(), "the takeover must wait for the row lock"
        holder.commit()
    racer.join(5)
    assert result == [None]
    engine.dispose()


def _take(sessions, run_id: int) -> leases.Lease | None:
    with sessions() as session:
        return leases.take(session, run_id, "b", TTL, NOW + TTL + 0.1)
