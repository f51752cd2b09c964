"""The Alembic migrations build exactly the schema the ORM models describe, 0003 keeps old datasets and 0004
and 0005 old ledgers verifiable."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from consortium.hub.db.models import Base
from consortium.hub.db.session import alembic_config, make_engine, migrate, session_factory
from consortium.hub.services import hub_identity, ledger
from consortium.hub.services.hub_key import HubKey
from consortium.ledger.chain import append, verify_chain
from consortium.ledger_audit import verify_from_db


def test_migrated_schema_matches_the_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    migrate(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_datasets_registered_before_environments_become_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.execute(text("INSERT INTO orgs (name, display_name, status, created_at) "
                          "VALUES ('north', '', 'admitted', '2026-01-01')"))
        conn.execute(text("INSERT INTO datasets (org_id, name, description, schema, rows, sha256, license, "
                          "visibility, file_format, created_at) VALUES (1, 'digits', '', '{}', 5, :sha, "
                          "'MIT', 'members', 'csv', '2026-01-01')"), {"sha": "a" * 64})
        command.upgrade(cfg, "head")
        assert conn.execute(text("SELECT kind, environment FROM datasets")).one() == ("table", None)
        command.downgrade(cfg, "0002")
        assert conn.execute(text("SELECT name FROM datasets")).scalar_one() == "digits"


def test_a_ledger_written_before_0004_still_verifies_and_grows_sealed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    engine = make_engine(url)
    old = [append(None, "org.admitted", "user:admin", {"org": "north"}, "2026-01-01T00:00:00+00:00")]
    old.append(append(old[0], "dataset.registered", "org:north", {"dataset": "north/x"},
                      "2026-01-01T00:00:01+00:00"))
    with engine.begin() as conn:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        for e in old:
            conn.execute(text("INSERT INTO ledger_entries (seq, event_type, actor, payload, created_at, "
                              "prev_hash, hash) VALUES (:seq, :event_type, :actor, :payload, :created_at, "
                              ":prev_hash, :hash)"), {**asdict(e), "payload": json.dumps(e.payload)})
        conn.execute(text("UPDATE ledger_head SET seq = 2, hash = :hash"), {"hash": old[-1].hash})
        command.upgrade(cfg, "head")
    hub_identity.start(engine, HubKey.generate())
    with session_factory(engine)() as session:
        ledger.record(session, "org.admitted", "user:admin", {"org": "south"}, scope=ledger.MEMBERS)
        session.commit()
        entries = list(ledger.iter_entries(session))
        assert [e.event_type for e in entries[2:]] == ["hub.key", "hub.created", "org.admitted"]
        assert [e.salt is None for e in entries] == [True, True, False, False, False]
        assert [e.signature is None for e in entries] == [True, True, False, False, False]
        chained = [ledger.to_chained(e, reveal=False) for e in entries]
    assert [e.payload for e in chained[:2]] + [chained[-1].payload] == [{"org": "north"}, {"dataset": "north/x"},
                                                                         None]
    assert verify_chain(chained).ok
    report = verify_from_db(url)
    assert report.ok and report.checked == 5, report.reason
    with engine.begin() as conn:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        with pytest.raises(RuntimeError, match="3 ledger entries are signed"):
            command.downgrade(cfg, "0004")
    engine.dispose()
