"""Concurrent writers, each with its own session, append to one linear chain that verifies (signatures, tree
and checkpoints included) on SQLite and PostgreSQL, while the checkpointer builds the tree beside them.

The suite runs 50 writers x 20 appends; ``CONSORTIUM_LEDGER_APPENDS=200`` gives the full 50 x 200."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime

from sqlalchemy import func, select

from consortium.hub.db.models import LedgerEntry
from consortium.hub.db.session import make_engine, migrate, session_factory
from consortium.hub.services import checkpoints, hub_identity, ledger
from consortium.hub.services.hub_key import HubKey
from consortium.ledger_audit import verify_from_db

WRITERS = 50
APPENDS = int(os.environ.get("CONSORTIUM_LEDGER_APPENDS", "20"))


def test_concurrent_writers_make_one_linear_chain(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    hub_identity.start(engine, HubKey.generate())
    sessions = session_factory(engine)
    failures: list[BaseException] = []
    done = threading.Event()

    def write(writer: int) -> None:
        try:
            with sessions() as session:
                for i in range(APPENDS):
                    ledger.record(session, "test.appended", f"writer:{writer}", {"writer": writer, "i": i},
                                  scope=ledger.MEMBERS)
                    session.commit()
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    def checkpoint() -> None:
        with sessions() as session:
            while not done.is_set():
                checkpoints.maybe_checkpoint(session, datetime.now(UTC), every=64, interval_s=0.2)
                done.wait(0.05)

    checkpointer = threading.Thread(target=checkpoint)
    checkpointer.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    checkpointer.join()
    assert not failures, failures[:3]
    with sessions() as session:
        checkpoints.maybe_checkpoint(session, datetime.now(UTC), every=1, interval_s=0, force=True)
        made = checkpoints.latest(session)
        total = session.scalar(select(func.count()).select_from(LedgerEntry))
        per_writer = session.execute(select(LedgerEntry.actor, func.count()).group_by(LedgerEntry.actor)).all()
    engine.dispose()
    assert total == 2 + WRITERS * APPENDS and made is not None and made.size == total
    assert sorted(n for actor, n in per_writer if actor.startswith("writer:")) == [APPENDS] * WRITERS
    report = verify_from_db(db_url)
    assert report.ok and report.checked == total, report.reason
    assert report.checkpoints >= 2
