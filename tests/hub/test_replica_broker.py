"""The replicas' broker (``hub/replicas.py``) on PostgreSQL: a notification published by one replica wakes the
other's waiters, and an ``answer:<run>`` notification reaches the other's driver callback; a replica ignores
its own echoes."""

from __future__ import annotations

import asyncio
import time

import pytest

from consortium.hub.events import wait_for
from consortium.hub.replicas import ReplicaBroker, libpq_url
from consortium.hub.state import answer_key, parse_answer_key

pytestmark = pytest.mark.postgres


def test_libpq_url_drops_the_sqlalchemy_driver() -> None:
    assert libpq_url("postgresql+psycopg://u:p%40ss@db:5432/c") == "postgresql://u:p%40ss@db:5432/c"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_notification_wakes_the_other_replica(db_url: str) -> None:
    nudged_a: list[str] = []
    nudged_b: list[str] = []
    a = ReplicaBroker(db_url, "a", nudged_a.append)
    b = ReplicaBroker(db_url, "b", nudged_b.append)
    a.start()
    b.start()
    try:
        assert a.listening.wait(10) and b.listening.wait(10)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            a.bind(loop)
            b.bind(loop)
            on_a, on_b = a.async_event("org:5"), b.async_event("org:5")
            a.notify("org:5")
            assert await wait_for(on_b, 10), "replica b never heard of org 5's task"
            assert on_a.is_set(), "the publishing replica's own waiters wake at once"
            b.notify(answer_key(7, 70, failed=False))
            deadline = time.monotonic() + 10
            while not nudged_a and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # b's own echo, had it not been ignored, would be in by now
            assert (nudged_a, nudged_b) == (["answer:7:70:done"], [])
            assert parse_answer_key(nudged_a[0]) == (7, 70, False)

        asyncio.run(main())
    finally:
        a.close()
        b.close()
