"""The RFC 6962 Merkle tree: roots, inclusion and consistency proofs against a direct recursive reference, and
their verifiers' refusal of every single-bit change."""

from __future__ import annotations

import hashlib
from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MerkleTree,
    consistency_ranges,
    entry_leaf,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    perfect_nodes,
    verify_consistency,
    verify_inclusion,
)

SMALL = 64
LARGE = 1 << 15


def data(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest()


def mth(begin: int, end: int) -> bytes:
    """RFC 6962 MTH, written straight from the definition (the reference)."""
    if end - begin == 1:
        return leaf_hash(data(begin))
    k = 1
    while k * 2 < end - begin:
        k *= 2
    return node_hash(mth(begin, begin + k), mth(begin + k, end))


def path(m: int, begin: int, end: int) -> list[bytes]:
    if end - begin == 1:
        return []
    k = 1
    while k * 2 < end - begin:
        k *= 2
    if m < begin + k:
        return path(m, begin, begin + k) + [mth(begin + k, end)]
    return path(m, begin + k, end) + [mth(begin, begin + k)]


def subproof(m: int, begin: int, end: int, whole: bool) -> list[bytes]:
    if m == end - begin:
        return [] if whole else [mth(begin, end)]
    k = 1
    while k * 2 < end - begin:
        k *= 2
    if m <= k:
        return subproof(m, begin, begin + k, whole) + [mth(begin + k, end)]
    return subproof(m - k, begin + k, end, False) + [mth(begin, begin + k)]


@lru_cache(maxsize=2)
def tree(size: int) -> MerkleTree:
    return MerkleTree(leaf_hash(data(i)) for i in range(size))


def flips(value: bytes):
    for bit in range(len(value) * 8):
        changed = bytearray(value)
        changed[bit // 8] ^= 1 << (bit % 8)
        yield bytes(changed)


def int_flips(value: int, bits: int = 40):
    return [value ^ (1 << b) for b in range(bits)]


def test_roots_match_the_definition() -> None:
    t = tree(2 * SMALL)
    assert t.root(0) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    for size in range(1, 2 * SMALL + 1):
        assert t.root(size) == mth(0, size)


def test_compact_range_appends_in_log_time_and_restarts_from_its_edge() -> None:
    t = tree(2 * SMALL)
    for size in range(0, 2 * SMALL):
        edge = [t.nodes[node] for node in perfect_nodes(0, size)] if size else []
        restarted = CompactRange(size, edge)
        assert restarted.root() == t.root(size)
        made = restarted.append(leaf_hash(data(size)))
        assert len(made) == 1 + (size ^ (size + 1)).bit_length() - 1
        assert restarted.root() == t.root(size + 1)


def test_every_proof_up_to_64_leaves_equals_the_rfc_definition_and_verifies() -> None:
    t = tree(SMALL)
    for size in range(1, SMALL + 1):
        root = t.root(size)
        for index in range(size):
            proof = t.inclusion_proof(index, size)
            assert proof == path(index, 0, size)
            assert verify_inclusion(leaf_hash(data(index)), index, size, proof, root)
        for first in range(1, size + 1):
            proof = t.consistency_proof(first, size)
            assert proof == subproof(first, 0, size, True)
            assert verify_consistency(first, size, t.root(first), root, proof)


def _inclusion_rejects_every_flip(t: MerkleTree, index: int, size: int) -> None:
    leaf, root = leaf_hash(data(index)), t.root(size)
    proof = t.inclusion_proof(index, size)
    assert verify_inclusion(leaf, index, size, proof, root)
    for i, element in enumerate(proof):
        for changed in flips(element):
            assert not verify_inclusion(leaf, index, size, [*proof[:i], changed, *proof[i + 1:]], root)
    for changed in flips(root):
        assert not verify_inclusion(leaf, index, size, proof, changed)
    for changed in flips(leaf):
        assert not verify_inclusion(changed, index, size, proof, root)
    for other in int_flips(index):
        assert not verify_inclusion(leaf, other, size, proof, root)
    for other in int_flips(size):
        # a size is trusted together with its root (both come from one signed checkpoint)
        if 0 < other <= t.size:
            assert not verify_inclusion(leaf, index, other, proof, t.root(other))
    assert not verify_inclusion(leaf, index, size, proof[:-1], root) or not proof
    assert not verify_inclusion(leaf, index, size, [*proof, proof[-1] if proof else root], root)


def _consistency_rejects_every_flip(t: MerkleTree, first: int, second: int) -> None:
    r1, r2 = t.root(first), t.root(second)
    proof = t.consistency_proof(first, second)
    assert verify_consistency(first, second, r1, r2, proof)
    for i, element in enumerate(proof):
        for changed in flips(element):
            assert not verify_consistency(first, second, r1, r2, [*proof[:i], changed, *proof[i + 1:]])
    for changed in flips(r1):
        assert not verify_consistency(first, second, changed, r2, proof)
    for changed in flips(r2):
        assert not verify_consistency(first, second, r1, changed, proof)
    for other in int_flips(first):
        if 0 < other <= t.size:
            assert not verify_consistency(other, second, t.root(other), r2, proof)
    for other in int_flips(second):
        if 0 < other <= t.size:
            assert not verify_consistency(first, other, r1, t.root(other), proof)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_small_proofs_reject_every_single_bit_change(draw: st.DataObject) -> None:
    t = tree(2 * SMALL)
    size = draw.draw(st.integers(1, SMALL))
    _inclusion_rejects_every_flip(t, draw.draw(st.integers(0, size - 1)), size)
    _consistency_rejects_every_flip(t, draw.draw(st.integers(1, size)), size)


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_large_proofs_verify_and_reject_every_single_bit_change(draw: st.DataObject) -> None:
    t = tree(LARGE)
    size = draw.draw(st.integers(LARGE // 4, LARGE // 2))
    index = draw.draw(st.integers(0, size - 1))
    _inclusion_rejects_every_flip(t, index, size)
    _consistency_rejects_every_flip(t, draw.draw(st.integers(1, size)), size)


def test_ranges_and_malformed_input_are_refused() -> None:
    with pytest.raises(ValueError):
        inclusion_ranges(5, 5)
    with pytest.raises(ValueError):
        consistency_ranges(0, 5)
    with pytest.raises(ValueError):
        perfect_nodes(1, 3)
    with pytest.raises(ValueError):
        entry_leaf("ab" * 31)
    t = tree(SMALL)
    root = t.root(8)
    assert entry_leaf("00" * 32) == leaf_hash(bytes(32))
    assert not verify_inclusion(leaf_hash(data(0)), -1, 8, t.inclusion_proof(0, 8), root)
    assert not verify_inclusion(leaf_hash(data(0)), 0, 8, ["x"], root)  # type: ignore[list-item]
    assert not verify_consistency(0, 8, EMPTY_ROOT, root, [])
    assert verify_consistency(8, 8, root, root, [])
    assert not verify_consistency(8, 8, root, root, [root])
    assert not verify_consistency(3, 8, t.root(3), root, [])
