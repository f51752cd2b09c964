"""The LRU map keeps at most its capacity and drops the least recently read or written entry."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consortium.lru import LRU


def test_reading_an_entry_keeps_it_over_an_older_one() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)


@given(st.integers(1, 5), st.lists(st.tuples(st.booleans(), st.integers(0, 9)), max_size=60))
def test_it_holds_the_most_recent_keys_like_a_list_model(capacity: int, ops: list[tuple[bool, int]]) -> None:
    cache: LRU[int, int] = LRU(capacity)
    model: list[int] = []  # keys, least recent first
    for write, key in ops:
        if write:
            cache.put(key, key * 10)
            model = [k for k in model if k != key] + [key]
            model = model[-capacity:]
        else:
            assert cache.get(key) == (key * 10 if key in model else None)
            if key in model:
                model = [k for k in model if k != key] + [key]
    assert [k for k in range(10) if cache.get(k) is not None] == sorted(model)
