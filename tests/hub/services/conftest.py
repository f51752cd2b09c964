"""A migrated database session on each backend, its ledger signed by a hub key, for the hub's service-level
tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from consortium.hub.db.session import make_engine, migrate, session_factory
from consortium.hub.services import hub_identity
from consortium.hub.services.hub_key import HubKey


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    engine = make_engine(db_url)
    migrate(engine)
    hub_identity.start(engine, HubKey.generate())
    with session_factory(engine)() as s:
        yield s
    engine.dispose()
