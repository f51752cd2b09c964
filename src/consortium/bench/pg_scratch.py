"""A throw-away PostgreSQL database for benchmarks and tests: made fresh in a cluster, dropped afterwards."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def scratch_database(admin_url: str, prefix: str = "consortium") -> Iterator[str]:
    """A new database named ``<prefix>_<random>`` in the cluster of ``admin_url`` (a ``postgresql://`` or
    ``postgresql+psycopg://`` URL); yields its SQLAlchemy URL and drops it afterwards (retrying while the
    server is briefly away, e.g. restarted by a fault scenario)."""
    import psycopg

    admin = admin_url.replace("postgresql+psycopg://", "postgresql://", 1)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        for attempt in range(20):
            try:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                break
            except psycopg.OperationalError:
                if attempt == 19:
                    raise
                time.sleep(0.5)
