"""The sliding-window failure limiter: examples and its invariants under any sequence of attempts."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.hub.ratelimit import FailureLimiter


def test_the_limit_th_failure_blocks_until_the_first_leaves_the_window() -> None:
    limiter = FailureLimiter(limit=3, window_s=10.0)
    for t in (0.0, 1.0, 2.0):
        assert limiter.retry_after("a", t) == 0.0
        limiter.fail("a", t)
    assert limiter.retry_after("a", 2.0) == pytest.approx(8.0)
    assert limiter.retry_after("a", 9.5) == pytest.approx(0.5)
    assert limiter.retry_after("a", 10.0) == 0.0  # the failure at 0 has left the window
    assert limiter.retry_after("b", 2.0) == 0.0  # keys count apart


def test_old_keys_are_forgotten_and_memory_is_bounded() -> None:
    limiter = FailureLimiter(limit=2, window_s=1.0, max_keys=3)
    for key in "abcd":
        limiter.fail(key, 0.0)
    assert len(limiter) == 3
    limiter.fail("b", 0.5)
    limiter.fail("b", 0.6)
    assert limiter.retry_after("b", 0.7) > 0  # a key keeps at most `limit` times, the newest
    assert limiter.retry_after("a", 0.7) == 0.0  # the stalest key went first
    limiter.retry_after("b", 5.0)
    assert len(limiter) == 2  # and a key whose failures all left the window is dropped


@pytest.mark.parametrize(("limit", "window"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_nonsense_settings_are_refused(limit: int, window: float) -> None:
    with pytest.raises(ValueError):
        FailureLimiter(limit, window)


attempts = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=5.0, allow_nan=False), st.sampled_from("xy")),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 6), window=st.floats(0.5, 10.0), steps=attempts)
def test_no_window_ever_holds_more_than_limit_failures(limit: int, window: float, steps: list) -> None:
    """An attacker who fails every attempt it is allowed gets at most ``limit`` failures into any window,
    and is told exactly when the next attempt is allowed."""
    limiter = FailureLimiter(limit, window)
    now = 0.0
    failed: dict[str, list[float]] = {"x": [], "y": []}
    for gap, key in steps:
        now += gap
        wait = limiter.retry_after(key, now)
        recent = [t for t in failed[key] if t + window > now]
        assert (wait > 0) == (len(recent) >= limit)
        if wait > 0:
            assert wait <= window + 1e-9
            later = copy.deepcopy(limiter)  # the limiter's clock never goes back: ask a copy about the future
            assert later.retry_after(key, now + wait + 1e-9) == 0.0
            continue
        limiter.fail(key, now)
        failed[key].append(now)
    for times in failed.values():
        for start in times:
            assert sum(1 for t in times if start <= t < start + window) <= limit
