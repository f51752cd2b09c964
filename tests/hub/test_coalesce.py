"""Concurrent lookups answered by one batch call (:mod:`consortium.hub.coalesce`)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from consortium.hub.coalesce import Coalescer


def test_keys_asked_while_a_batch_runs_share_the_next_batch() -> None:
    batches: list[list[int]] = []
    release = threading.Event()

    def fetch(keys):
        batches.append(sorted(keys))
        if len(batches) == 1:
            release.wait(5)
        return {key: key * 10 for key in keys if key != 3}

    async def scenario() -> list[int | None]:
        coalescer: Coalescer[int, int | None] = Coalescer(fetch, None)
        first = asyncio.create_task(coalescer.get(1))
        await asyncio.sleep(0.05)  # the first batch ([1]) is running and blocked
        rest = [asyncio.create_task(coalescer.get(key)) for key in (2, 3, 2, 4)]
        await asyncio.sleep(0.05)
        release.set()
        return [await first, *[await task for task in rest]]

    assert asyncio.run(scenario()) == [10, 20, None, 20, 40]
    assert batches == [[1], [2, 3, 4]]


def test_a_lone_lookup_waits_for_nothing_and_errors_reach_every_caller_of_the_batch() -> None:
    calls: list[list[str]] = []

    def fetch(keys):
        calls.append(list(keys))
        raise RuntimeError("database gone")

    async def scenario() -> None:
        coalescer: Coalescer[str, int] = Coalescer(fetch, 0)
        results = await asyncio.gather(coalescer.get("a"), coalescer.get("b"), return_exceptions=True)
        assert [str(error) for error in results] == ["database gone", "database gone"]

    asyncio.run(scenario())
    assert calls == [["a", "b"]]


def test_a_cancelled_caller_does_not_break_its_batch() -> None:
    async def scenario() -> int:
        gate = asyncio.Event()
        loop = asyncio.get_running_loop()

        def fetch(keys):
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(5)
            return dict.fromkeys(keys, 7)

        coalescer: Coalescer[int, int] = Coalescer(fetch, 0)
        doomed = asyncio.create_task(coalescer.get(1))
        kept = asyncio.create_task(coalescer.get(1))
        await asyncio.sleep(0.05)
        doomed.cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        return await kept

    assert asyncio.run(scenario()) == 7


def test_a_new_event_loop_starts_afresh() -> None:
    coalescer: Coalescer[int, int] = Coalescer(lambda keys: dict.fromkeys(keys, 1), 0)
    assert asyncio.run(coalescer.get(5)) == 1
    assert asyncio.run(coalescer.get(6)) == 1
