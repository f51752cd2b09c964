"""Seeded shuffling of a client's examples that can be computed for thousands of clients at once.

A client's order in an epoch is the argsort of a 64-bit hash of (its seed, the epoch, the example's position).
One client alone (:func:`permutation`) and a whole cohort in one vectorised sort (:func:`segment_permutations`)
give exactly the same orders, which is what lets the simulator's batched engine reproduce each client's own
mini-batch loop without creating one random generator per client.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_EPOCH_STRIDE = np.uint64(0xD1B54A32D192ED03)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser: a bijective, well-mixed 64-bit hash (wrapping uint64 arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _keys(seeds: np.ndarray, epoch: int, positions: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        base = _splitmix64(seeds.astype(np.uint64) + np.uint64(epoch) * _EPOCH_STRIDE)
        return _splitmix64(base + positions.astype(np.uint64) * _GOLDEN)


def permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order (int64 positions ``0..n-1``) in which a client with ``seed`` visits its ``n`` examples."""
    positions = np.arange(n, dtype=np.int64)
    keys = _keys(np.full(n, seed, dtype=np.uint64), epoch, positions)
    return np.argsort(keys, kind="stable").astype(np.int64)


def segment_permutations(sizes: np.ndarray, seeds: np.ndarray, epoch: int) -> np.ndarray:
    """:func:`permutation` of every client at once: client-major, each segment holding local positions.

    ``sizes[c]`` examples of client ``c`` with ``seeds[c]``; the result has ``sizes.sum()`` entries and its
    segment ``c`` equals ``permutation(sizes[c], seeds[c], epoch)``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    positions = np.arange(int(sizes.sum()), dtype=np.int64) - starts[owner]
    keys = _keys(np.asarray(seeds, dtype=np.uint64)[owner], epoch, positions)
    order = np.lexsort((keys, owner))
    return positions[order]
