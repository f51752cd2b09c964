"""Shamir secret sharing of 32-byte secrets over GF(p), p = 2^521 - 1 (a Mersenne prime above 2^256).

A secret ``s`` (read as a big-endian integer below 2^256) is the constant term of a random polynomial of degree
``threshold - 1``; holder ``x`` (1-based, distinct, nonzero) gets ``f(x)``. Any ``threshold`` shares give
``s = f(0)`` by Lagrange interpolation; fewer are uniformly distributed whatever the secret (every coefficient
is uniform over the field). A share replaced by a random field element makes the result a random element too,
which lies below 2^256 only with probability 2^-265, so :func:`reconstruct` refuses it as :class:`BadShare`; a
share changed by a small amount is not caught that way, which is why the protocol also commits to every share
(see :func:`~consortium.fl.privacy.secagg.masks.share_commitment`). A share is encoded in
66 big-endian bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

from consortium.fl.privacy.secagg.errors import BadShare

PRIME = (1 << 521) - 1
SECRET_BYTES = 32
SHARE_BYTES = 66
_PRIME_BITS = 521


def _random_element(random_bytes: Callable[[int], bytes]) -> int:
    """A uniform element of GF(p): 521 random bits, redrawn in the one case they equal p."""
    while True:
        value = int.from_bytes(random_bytes(SHARE_BYTES), "big") >> (8 * SHARE_BYTES - _PRIME_BITS)
        if value < PRIME:
            return value


def split(
    secret: bytes, threshold: int, xs: Sequence[int], random_bytes: Callable[[int], bytes]
) -> dict[int, bytes]:
    """Shares of ``secret`` for the holders ``xs``: any ``threshold`` of them reconstruct it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a secret has {SECRET_BYTES} bytes, got {len(secret)}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("holder coordinates must be distinct and nonzero")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must lie in [1, {len(xs)}], got {threshold}")
    coefficients = [int.from_bytes(secret, "big")] + [_random_element(random_bytes) for _ in range(threshold - 1)]
    shares = {}
    for x in xs:
        value = 0
        for coefficient in reversed(coefficients):
            value = (value * x + coefficient) % PRIME
        shares[x] = value.to_bytes(SHARE_BYTES, "big")
    return shares


def reconstruct(shares: Sequence[tuple[int, bytes]], threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares ``(x, share)``; the first ``threshold`` by ``x`` are used.

    BadShare for too few shares, a repeated holder, a malformed share, or shares that do not reconstruct a
    32-byte secret (some share was garbled)."""
    xs = [x for x, _ in shares]
    if len(set(xs)) != len(xs):
        raise BadShare(f"holder {sorted(x for x in xs if xs.count(x) > 1)[0]} appears twice among the shares")
    if len(shares) < threshold:
        raise BadShare(f"{len(shares)} shares cannot reconstruct a secret of threshold {threshold}")
    points = []
    for x, share in sorted(shares)[:threshold]:
        if len(share) != SHARE_BYTES or (value := int.from_bytes(share, "big")) >= PRIME:
            raise BadShare(f"the share of holder {x} is not an element of the field")
        points.append((x, value))
    weights = lagrange_at_zero(tuple(x for x, _ in points))
    secret = sum(y * w for (_, y), w in zip(points, weights)) % PRIME
    if secret >> (8 * SECRET_BYTES):
        raise BadShare("the shares do not reconstruct a 32-byte secret: at least one of them is wrong")
    return secret.to_bytes(SECRET_BYTES, "big")


@lru_cache(maxsize=1024)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """The Lagrange basis at 0 for the holders ``xs``: ``f(0) = sum(w_i f(x_i))`` (public, so a round's
    reconstructions share them; the same holders recur for every owner)."""
    weights = []
    for i, xi in enumerate(xs):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        weights.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return tuple(weights)
