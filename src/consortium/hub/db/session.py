"""Engine and session factory for the hub database; migrations are applied on start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from consortium.hub.db.sqlite_writes import gate_writes, gated_factory

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


POOL = {"pool_size": 20, "max_overflow": 40}
"""Connections kept open: the HTTP worker threads (anyio's 40) and the drivers each hold one while they work;
with SQLAlchemy's default of 5 the pool opened and closed connections on every burst of node uploads."""


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout, foreign keys and one writer at a time
    (:mod:`consortium.hub.db.sqlite_writes`)."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True, **POOL}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"check_same_thread": False, "timeout": 30, "factory": gated_factory()}}
        if ":memory:" not in url and url.rstrip("/") != "sqlite:":
            kwargs.update(POOL)
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        gate_writes(engine)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    return engine


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
