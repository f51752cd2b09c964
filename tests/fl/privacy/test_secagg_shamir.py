"""Shamir sharing: any t shares reconstruct, t - 1 look uniform, wrong and repeated shares are refused."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.fl.privacy.secagg import shamir
from consortium.fl.privacy.secagg.errors import BadShare


@settings(max_examples=80, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), n=st.integers(1, 25), data=st.data())
def test_any_threshold_shares_reconstruct(secret: bytes, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    shares = shamir.split(secret, t, list(range(1, n + 1)), rng.randbytes)
    chosen = data.draw(st.lists(st.sampled_from(sorted(shares)), min_size=t, max_size=n, unique=True))
    assert shamir.reconstruct([(x, shares[x]) for x in chosen], t) == secret


def test_fewer_than_threshold_shares_are_uniform_whatever_the_secret() -> None:
    """Chi-square on the low byte of t - 1 = 2 shares, for an all-zero and an all-ones secret."""
    rng = random.Random(7)
    for secret in (bytes(32), b"\xff" * 32):
        counts: Counter[int] = Counter()
        for _ in range(4000):
            shares = shamir.split(secret, 3, [1, 2, 3, 4], rng.randbytes)
            counts.update(shares[x][-1] for x in (1, 2))
        expected = 8000 / 256
        chi2 = sum((counts[v] - expected) ** 2 / expected for v in range(256))
        assert chi2 < 340  # 255 degrees of freedom: p < 0.0003 above this


def test_a_garbled_share_is_detected() -> None:
    rng = random.Random(1)
    for _ in range(50):
        shares = shamir.split(rng.randbytes(32), 3, [1, 2, 3], rng.randbytes)
        garbled = shamir._random_element(rng.randbytes).to_bytes(66, "big")
        with pytest.raises(BadShare, match="wrong"):
            shamir.reconstruct([(1, shares[1]), (2, garbled), (3, shares[3])], 3)


@pytest.mark.parametrize(
    ("shares", "match"),
    [
        ([(1, bytes(66)), (1, bytes(66))], "twice"),
        ([(1, bytes(66))], "cannot reconstruct"),
        ([(1, b"\xff" * 66), (2, bytes(66))], "not an element"),
        ([(1, bytes(65)), (2, bytes(66))], "not an element"),
    ],
)
def test_malformed_share_sets_are_refused(shares: list[tuple[int, bytes]], match: str) -> None:
    with pytest.raises(BadShare, match=match):
        shamir.reconstruct(shares, 2)


@pytest.mark.parametrize(
    ("secret", "t", "xs", "match"),
    [(bytes(31), 1, [1], "32 bytes"), (bytes(32), 3, [1, 2], "threshold"), (bytes(32), 1, [1, 1], "distinct"),
     (bytes(32), 1, [0], "nonzero")],
)
def test_bad_split_arguments(secret: bytes, t: int, xs: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        shamir.split(secret, t, xs, random.Random(0).randbytes)
