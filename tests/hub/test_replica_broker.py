"""The replicas' broker (``hub/replicas.py``) on PostgreSQL: a notification published by one replica wakes the
other's waiters, and an ``answer:<run>`` notification reaches the other's driver callback; a replica ignores
its own echoes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consortium.hub.events import Broker, wait_for
from consortium.hub.replicas import MAX_PAYLOAD_BYTES, ReplicaBroker, libpq_url, payloads
from consortium.hub.state import answer_key, parse_answer_key

pytestmark = pytest.mark.postgres


@contextmanager
def listening(*brokers: ReplicaBroker) -> Iterator[tuple[ReplicaBroker, ...]]:
    """The brokers started, once each one's LISTEN is in place; closed on exit."""
    try:
        for broker in brokers:
            broker.start()
        assert all(broker.listening.wait(10) for broker in brokers)
        yield brokers
    finally:
        for broker in brokers:
            broker.close()


def bind(*brokers: ReplicaBroker) -> None:
    """Bind the brokers to the running event loop (one loop plays every replica)."""
    for broker in brokers:
        broker.bind(asyncio.get_running_loop())


def test_notify_many_wakes_each_keys_waiters_once() -> None:
    broker = Broker()

    async def main() -> None:
        broker.bind(asyncio.get_running_loop())
        first, second, other = (broker.async_event(k) for k in ("org:1", "org:2", "org:3"))
        broker.notify_many(["org:1", "org:2"])
        assert await wait_for(first, 1) and await wait_for(second, 1)
        assert not other.is_set()
        assert broker.async_event("org:1") is not first, "a fired event is not reused"

    asyncio.run(main())


def test_libpq_url_drops_the_sqlalchemy_driver() -> None:
    assert libpq_url("postgresql+psycopg://u:p%40ss@db:5432/c") == "postgresql://u:p%40ss@db:5432/c"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_notification_wakes_the_other_replica(db_url: str) -> None:
    nudged_a: list[str] = []
    nudged_b: list[str] = []
    brokers = ReplicaBroker(db_url, "a", nudged_a.append), ReplicaBroker(db_url, "b", nudged_b.append)
    with listening(*brokers) as (a, b):

        async def main() -> None:
            bind(a, b)
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


KEY_TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\x00")


@given(st.lists(st.text(alphabet=KEY_TEXT, min_size=1, max_size=300), max_size=200),
       st.text(alphabet="abc0123456789-", min_size=1, max_size=40))
def test_payloads_carry_every_key_in_order_within_postgresql_limit(keys: list[str], sender: str) -> None:
    sent = list(payloads(sender, keys))
    assert all(len(p.encode()) <= MAX_PAYLOAD_BYTES for p in sent)
    assert all(p.startswith(f"{sender} ") for p in sent)
    assert [line for p in sent for line in p.partition(" ")[2].split("\n")] == keys


def test_a_key_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        ReplicaBroker("postgresql+psycopg://x@localhost/none", "a").notify_many(["org:1\norg:2"])


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_burst_of_keys_wakes_every_waiter_on_the_other_replica(db_url: str) -> None:
    """A phase of 1,500 orgs: more keys than one notification holds, all of them heard, in one call."""
    keys = [f"org:{n}" for n in range(1500)]
    assert sum(1 for _ in payloads("a", keys)) > 1
    with listening(ReplicaBroker(db_url, "a"), ReplicaBroker(db_url, "b")) as (a, b):

        async def main() -> None:
            bind(a, b)
            events = [b.async_event(key) for key in keys]
            a.notify_many(keys)
            woken = await asyncio.gather(*(wait_for(event, 10) for event in events))
            assert all(woken), f"{woken.count(False)} of {len(keys)} waiters on b never woke"

        asyncio.run(main())
