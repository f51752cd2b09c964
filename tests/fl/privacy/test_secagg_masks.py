"""Masks and share encryption: both ends agree, keys are bound to round and pair, the whole key is used."""

from __future__ import annotations

import random

import numpy as np
import pytest

from consortium.fl.privacy.secagg import masks
from consortium.fl.privacy.secagg.errors import BadKeys, BadShare


def keys(seed: int) -> tuple[masks.X25519PrivateKey, masks.X25519PrivateKey]:
    rng = random.Random(seed)
    return masks.new_private_key(rng.randbytes), masks.new_private_key(rng.randbytes)


def test_both_ends_derive_the_same_pair_seed_bound_to_round_and_pair() -> None:
    a, b = keys(1)
    seed = masks.pair_seed(a, masks.public_bytes(b), 5, "alice", "bob")
    assert seed == masks.pair_seed(b, masks.public_bytes(a), 5, "bob", "alice")
    assert seed != masks.pair_seed(a, masks.public_bytes(b), 6, "alice", "bob")
    assert seed != masks.pair_seed(a, masks.public_bytes(b), 5, "alice", "carol")
    assert len(seed) == 32


def test_pair_masks_cancel_in_a_sum() -> None:
    a, b = keys(2)
    seed = masks.pair_seed(a, masks.public_bytes(b), 0, "a", "b")
    x, y = np.arange(10, dtype=np.uint32), np.full(10, 2**32 - 1, dtype=np.uint32)
    masked_x = masks.add_mask(x, seed, masks.pair_sign("a", "b"))
    masked_y = masks.add_mask(y, seed, masks.pair_sign("b", "a"))
    assert not np.array_equal(masked_x, x)
    assert np.array_equal(masked_x + masked_y, x + y)


def test_the_mask_depends_on_every_byte_of_the_seed() -> None:
    """Unlike a 32-bit fold of the secret, seeds that share 31 bytes expand to unrelated masks."""
    seed = bytes(range(32))
    base = masks.expand(seed, 64)
    for i in range(32):
        other = bytearray(seed)
        other[i] ^= 0x80
        assert np.count_nonzero(masks.expand(bytes(other), 64) == base) < 3
    assert np.array_equal(masks.expand(seed, 64), base) and np.array_equal(masks.expand(seed, 8), base[:8])


def test_sealed_shares_open_only_for_their_round_sender_and_recipient() -> None:
    a, b = keys(3)
    key_ab = masks.share_key(masks.exchange(a, masks.public_bytes(b)), 1, "a", "b")
    assert key_ab == masks.share_key(masks.exchange(b, masks.public_bytes(a)), 1, "a", "b")
    assert key_ab != masks.share_key(masks.exchange(b, masks.public_bytes(a)), 1, "b", "a")  # one per direction
    sealed = masks.seal(key_ab, b"share", 1, "a", "b")
    assert masks.open_sealed(key_ab, sealed, 1, "a", "b") == b"share"
    for round_id, sender, recipient in [(2, "a", "b"), (1, "c", "b"), (1, "a", "c")]:
        with pytest.raises(BadShare, match="does not authenticate"):
            masks.open_sealed(key_ab, sealed, round_id, sender, recipient)
    tampered = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(BadShare):
        masks.open_sealed(key_ab, tampered, 1, "a", "b")


def test_a_low_order_public_key_is_refused() -> None:
    a, _ = keys(4)
    with pytest.raises(BadKeys, match="key agreement"):
        masks.pair_seed(a, bytes(32), 0, "a", "b")


def test_share_commitments_bind_every_field() -> None:
    base = masks.share_commitment(1, "a", "b", "self_mask", b"\x01" * 66)
    assert len(base) == 64
    variants = [masks.share_commitment(2, "a", "b", "self_mask", b"\x01" * 66),
                masks.share_commitment(1, "c", "b", "self_mask", b"\x01" * 66),
                masks.share_commitment(1, "a", "c", "self_mask", b"\x01" * 66),
                masks.share_commitment(1, "a", "b", "mask_key", b"\x01" * 66),
                masks.share_commitment(1, "a", "b", "self_mask", b"\x02" * 66)]
    assert base not in variants and len(set(variants)) == len(variants)
