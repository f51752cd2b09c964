"""Many concurrent lookups answered by one batch call (the pattern of a data loader or a group commit).

When a phase opens, a hub replica wakes the long polls of every node the phase concerns at once; asked one by
one, the database would see one claim per node. A :class:`Coalescer` starts a batch as soon as a first key is
asked for (no timer: alone, a lookup waits for nothing) and lets every key asked for while that batch runs
join the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

K = TypeVar("K")
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """``await get(key)``: ``fetch(keys)`` (run in the thread pool) for every key waiting at that moment; a
    key it leaves out gets ``missing``. An exception of ``fetch`` reaches every caller of its batch."""

    def __init__(self, fetch: Callable[[Collection[K]], dict[K, V]], missing: V) -> None:
        self._fetch = fetch
        self._missing = missing
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._drainer: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        if self._drainer is not None and self._drainer.get_loop() is not loop:
            self._drainer, self._waiting = None, {}  # a new event loop (a test's app restarted): start afresh
        future: asyncio.Future[V] = loop.create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            try:
                found, error = await run_in_threadpool(self._fetch, list(batch)), None
            except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
                found, error = {}, exc
            for key, futures in batch.items():
                for future in futures:
                    if future.done():  # its caller was cancelled (the client went away)
                        continue
                    if error is not None:
                        future.set_exception(error)
                    else:
                        future.set_result(found.get(key, self._missing))
