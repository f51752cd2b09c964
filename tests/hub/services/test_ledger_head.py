"""A ledger whose tail was deleted in the database fails verification against the recorded head, on SQLite and
PostgreSQL, and still names the cut (not the new entry) after the hub appends again."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select

from consortium.hub.db.models import LedgerEntry
from consortium.hub.db.session import make_engine, migrate, session_factory
from consortium.hub.services import hub_identity, hub_key, ledger
from consortium.ledger_audit import verify_from_db

ENTRIES = 150
KEY = hub_key.HubKey.generate()


@pytest.fixture
def filled(db_url: str) -> str:
    engine = make_engine(db_url)
    migrate(engine)
    hub_identity.start(engine, KEY)
    with session_factory(engine)() as session:
        ledger.record_many(session, [("run.started", "hub", {"run_id": i}) for i in range(ENTRIES - 3)],
                          scope=ledger.MEMBERS)
        ledger.record(session, "run.completed", "hub", {"run_id": 0}, scope=ledger.MEMBERS)
        session.commit()
    engine.dispose()
    return db_url


def cut_and_maybe_append(url: str, cut: int, append: bool) -> None:
    engine = make_engine(url)
    hub_key.install(engine, KEY)
    with session_factory(engine)() as session:
        session.execute(delete(LedgerEntry).where(LedgerEntry.seq > ENTRIES - cut))
        session.commit()
        if append:
            ledger.record(session, "org.admitted", "admin", {"org": "late"}, scope=ledger.MEMBERS)
            session.commit()
        assert session.scalar(select(LedgerEntry.seq).order_by(LedgerEntry.seq.desc()).limit(1)) == (
            ENTRIES + 1 if append else (ENTRIES - cut or None)
        )
    engine.dispose()


def test_an_intact_ledger_verifies_up_to_its_head(filled: str) -> None:
    report = verify_from_db(filled)
    assert report.ok and report.checked == ENTRIES, report.reason


@pytest.mark.parametrize("cut", [1, 100, ENTRIES], ids=["last", "last-100", "all"])
def test_a_cut_tail_is_found_against_the_stored_head(filled: str, cut: int) -> None:
    cut_and_maybe_append(filled, cut, append=False)
    report = verify_from_db(filled)
    kept = ENTRIES - cut
    assert (report.ok, report.first_bad_seq, report.checked) == (False, kept + 1, kept)
    if cut == ENTRIES:
        assert report.reason == f"entries 1–{ENTRIES} are missing: every entry was cut"
    else:
        assert f"the chain was cut after entry {kept}" in report.reason


@pytest.mark.parametrize("cut", [1, 100, ENTRIES], ids=["last", "last-100", "all"])
def test_after_the_next_append_the_cut_is_named_not_the_new_entry(filled: str, cut: int) -> None:
    cut_and_maybe_append(filled, cut, append=True)
    report = verify_from_db(filled)
    kept = ENTRIES - cut
    assert (report.ok, report.first_bad_seq, report.checked) == (False, kept + 1, kept), report.reason
    missing = f"entry {ENTRIES} is missing" if cut == 1 else f"entries {kept + 1}–{ENTRIES} are missing"
    assert report.reason.startswith(missing)
    if cut == ENTRIES:
        assert report.reason.endswith(f"every entry before entry {ENTRIES + 1} was cut")
