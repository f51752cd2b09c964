"""Hash-based shuffling: one client alone and a whole cohort at once give the same orders."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.fl.shuffle import permutation, segment_permutations

seeds = st.integers(0, 2**63 - 1)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=12), seed_list=st.data(), epoch=st.integers(0, 5)
)
def test_segments_equal_each_clients_own_permutation(sizes: list[int], seed_list, epoch: int) -> None:
    client_seeds = seed_list.draw(st.lists(seeds, min_size=len(sizes), max_size=len(sizes)))
    together = segment_permutations(np.array(sizes), np.array(client_seeds, dtype=np.uint64), epoch)
    start = 0
    for size, seed in zip(sizes, client_seeds, strict=True):
        assert np.array_equal(together[start : start + size], permutation(size, seed, epoch))
        start += size
    assert start == len(together)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 200), seed=seeds, epoch=st.integers(0, 10))
def test_permutation_is_a_permutation(n: int, seed: int, epoch: int) -> None:
    assert np.array_equal(np.sort(permutation(n, seed, epoch)), np.arange(n))


def test_orders_change_with_seed_and_epoch_and_look_uniform() -> None:
    assert not np.array_equal(permutation(50, 1, 0), permutation(50, 2, 0))
    assert not np.array_equal(permutation(50, 1, 0), permutation(50, 1, 1))
    first_positions = np.bincount([permutation(5, seed, 0)[0] for seed in range(5000)], minlength=5)
    assert first_positions.min() > 850 and first_positions.max() < 1150, first_positions
