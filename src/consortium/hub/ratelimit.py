"""A sliding-window limit on failures per key (e.g. failed authentications per client address).

Pure: the clock is passed in. A key is *blocked* once ``limit`` failures fall inside the last ``window_s``
seconds, and unblocked as soon as the oldest of them leaves the window; :meth:`FailureLimiter.retry_after`
says when. Memory is bounded: each key keeps at most ``limit`` timestamps, and at most ``max_keys`` keys are
tracked (the stalest are forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable


class FailureLimiter:
    """At most ``limit`` failures per key in any ``window_s`` seconds before the key is blocked."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 100_000) -> None:
        if limit < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("limit and max_keys must be >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: OrderedDict[Hashable, deque[float]] = OrderedDict()

    def _recent(self, key: Hashable, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] + self.window_s <= now:  # the same sum as retry_after: never a 0 wait
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: Hashable, now: float) -> float:
        """Seconds until ``key`` may try again: 0 when it is not blocked."""
        times = self._recent(key, now)
        if times is None or len(times) < self.limit:
            return 0.0
        return times[0] + self.window_s - now

    def fail(self, key: Hashable, now: float) -> None:
        """Record one failure of ``key`` at ``now`` (times are expected not to go backwards)."""
        times = self._recent(key, now)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.limit)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(key)
        times.append(now)

    def __len__(self) -> int:
        return len(self._failures)
