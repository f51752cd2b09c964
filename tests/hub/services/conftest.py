"""A migrated database session on each backend, for the hub's service-level tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from consortium.hub.db.session import make_engine, migrate, session_factory


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    engine = make_engine(db_url)
    migrate(engine)
    with session_factory(engine)() as s:
        yield s
    engine.dispose()
