"""Wake-ups without polling: long-poll handlers (asyncio) wait on keys that any thread can notify."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Broker:
    """``notify(key)`` from any thread wakes every waiter on ``key`` at once.

    Waiters take their event *before* checking the database, so a notification that lands between the check
    and the wait is never lost.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_events: dict[str, asyncio.Event] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def async_event(self, key: str) -> asyncio.Event:
        """The event the next ``notify(key)`` sets (call from the event loop's thread)."""
        event = self._async_events.get(key)
        if event is None:
            event = self._async_events[key] = asyncio.Event()
        return event

    def notify(self, key: str) -> None:
        self.notify_many((key,))

    def notify_many(self, keys: Iterable[str]) -> None:
        """``notify`` each of ``keys`` with one wake-up of the event loop (a phase's orgs, say)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fire, tuple(keys))

    def _fire(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            event = self._async_events.pop(key, None)
            if event is not None:
                event.set()


async def wait_for(event: asyncio.Event, timeout: float) -> bool:
    """True if ``event`` fired within ``timeout`` seconds."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True
