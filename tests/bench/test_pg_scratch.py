"""The scratch PostgreSQL database: usable inside the block, gone after it."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, text

from consortium.bench.pg_scratch import scratch_database

PG_ADMIN_URL = os.environ.get("CONSORTIUM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def test_scratch_database_is_made_and_dropped() -> None:
    with scratch_database(PG_ADMIN_URL, "consortium_scratch") as url:
        name = url.rsplit("/", 1)[1]
        assert name.startswith("consortium_scratch_")
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == name
        engine.dispose()
    admin = create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.connect() as conn:
        assert conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is None
    admin.dispose()
