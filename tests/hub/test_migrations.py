"""The Alembic migrations build exactly the schema the ORM models describe, and 0003 keeps old datasets."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from consortium.hub.db.models import Base
from consortium.hub.db.session import alembic_config, make_engine, migrate


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
