"""The ledger's Merkle tree, RFC 6962 §2.1 hashing (pure: no I/O, no database, no clock).

Leaf ``i`` of the tree is ledger entry ``seq = i + 1``, and the leaf's data are the 32 bytes of that entry's
hash (its hex ``hash`` decoded): a leaf hash is ``SHA-256(0x00 || entry hash bytes)``, an interior node
``SHA-256(0x01 || left || right)``, the tree of ``n`` leaves splits at the largest power of two below ``n``,
and the empty tree's root is ``SHA-256("")``. The chain already commits every entry to all earlier ones; the
tree adds what the chain cannot give cheaply: a checkpoint ``(size, root)`` that a witness can extend with a
short consistency proof instead of re-reading the ledger, and short inclusion proofs of single entries.

Every subtree the algorithms need is a *perfect* one (``2**level`` leaves starting at a multiple of its size),
named ``(level, index)``: it covers leaves ``[index * 2**level, (index + 1) * 2**level)``. A proof element is
the hash of a range ``[begin, end)``, folded from the perfect subtrees :func:`perfect_nodes` cuts it into, so
a store that keeps the hash of every perfect subtree (written once, when its last leaf arrives:
:class:`CompactRange`) answers any root or proof with ``O(log n)`` lookups. Proof generation follows RFC 6962
§2.1.1-2.1.2, verification RFC 9162 §2.1.3.2 and §2.1.4.2.

A proof alone does not bind the tree's size: a verifier checks it against a ``(size, root)`` pair it trusts,
taken from a signed checkpoint (see :mod:`consortium.ledger.checkpoint`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_BYTES = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the tree of no leaves."""

Node = tuple[int, int]
"""A perfect subtree: ``(level, index)``."""
NodeLookup = Callable[[Sequence[Node]], dict[Node, bytes]]
"""Given perfect subtrees, their hashes (every one asked for)."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def entry_leaf(entry_hash_hex: str) -> bytes:
    """The leaf hash of a ledger entry from its hex ``hash``; ``ValueError`` unless that is 32 bytes of hex."""
    raw = bytes.fromhex(entry_hash_hex) if isinstance(entry_hash_hex, str) else b""
    if len(raw) != HASH_BYTES:
        raise ValueError(f"an entry hash is {2 * HASH_BYTES} hex digits, got {entry_hash_hex!r:.80}")
    return leaf_hash(raw)


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n`` >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_nodes(begin: int, end: int) -> list[Node]:
    """The perfect subtrees that make up ``[begin, end)``, left to right, largest first.

    ``begin`` must be a multiple of the smallest power of two >= ``end - begin`` (true of every range the
    RFC's recursion produces, and of ``[0, n)``); ``ValueError`` otherwise.
    """
    if not 0 <= begin < end:
        raise ValueError(f"[{begin}, {end}) is not a non-empty range of leaves")
    if begin % (1 << (end - begin - 1).bit_length()):
        raise ValueError(f"[{begin}, {end}) is not a subtree of the RFC 6962 tree")
    nodes = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        nodes.append((level, begin >> level))
        begin += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """The hash of a range from the hashes of its perfect subtrees (as :func:`perfect_nodes` orders them)."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose hashes are the audit path of leaf ``index`` in the tree of ``size`` leaves, leaf end
    first (RFC 6962 §2.1.1 ``PATH``)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    ranges = []
    begin, end = 0, size
    while end - begin > 1:
        middle = begin + _split(end - begin)
        if index < middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((begin, middle))
            begin = middle
    return ranges[::-1]


def consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """The ranges whose hashes prove the tree of ``first`` leaves a prefix of the tree of ``second`` (RFC 6962
    §2.1.2 ``PROOF``); ``1 <= first <= second``."""
    if not 1 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    ranges = []
    begin, end, m, whole = 0, second, first, True
    while end - begin != m:
        k = _split(end - begin)
        if m <= k:
            ranges.append((begin + k, end))
            end = begin + k
        else:
            ranges.append((begin, begin + k))
            begin, m, whole = begin + k, m - k, False
    if not whole:
        ranges.append((begin, end))
    return ranges[::-1]


def range_hashes(ranges: Sequence[tuple[int, int]], lookup: NodeLookup) -> list[bytes]:
    """The hash of each range, with one call to ``lookup`` for every perfect subtree they need."""
    cut = [perfect_nodes(begin, end) for begin, end in ranges]
    known = lookup(sorted({node for nodes in cut for node in nodes}))
    return [fold([known[node] for node in nodes]) for nodes in cut]


def root_of(size: int, lookup: NodeLookup) -> bytes:
    """The root of the first ``size`` leaves."""
    return EMPTY_ROOT if size == 0 else range_hashes([(0, size)], lookup)[0]


class CompactRange:
    """The right edge of a growing tree: the perfect subtrees that make up ``[0, size)``, so appending a leaf
    and taking the root cost ``O(log size)``. :meth:`append` returns every perfect subtree the leaf completes,
    for a store that keeps them."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        nodes = perfect_nodes(0, size) if size else []
        if len(nodes) != len(hashes):
            raise ValueError(f"a tree of {size} leaves has {len(nodes)} edge subtrees, got {len(hashes)}")
        self.size = size
        self._edge = [(level, h) for (level, _), h in zip(nodes, hashes, strict=True)]

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; the ``(level, index, hash)`` of each perfect subtree it completes, leaf first."""
        index = self.size
        made = [(0, index, leaf)]
        self._edge.append((0, leaf))
        level = 0
        while len(self._edge) >= 2 and self._edge[-2][0] == level:
            (_, left), (_, right) = self._edge[-2], self._edge[-1]
            level += 1
            parent = node_hash(left, right)
            del self._edge[-2:]
            self._edge.append((level, parent))
            made.append((level, index >> level, parent))
        self.size += 1
        return made

    def extend(self, leaves: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        """:meth:`append` each leaf; every completed subtree."""
        return [node for leaf in leaves for node in self.append(leaf)]

    def root(self) -> bytes:
        """The root of the ``size`` leaves so far."""
        return fold([h for _, h in self._edge]) if self._edge else EMPTY_ROOT


class MerkleTree:
    """A whole tree in memory (every perfect subtree kept): proofs and roots at any size up to ``size``."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self.nodes: dict[Node, bytes] = {}
        self._range = CompactRange()
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        return self._range.size

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash."""
        for level, index, h in self._range.append(leaf):
            self.nodes[(level, index)] = h

    def lookup(self, nodes: Sequence[Node]) -> dict[Node, bytes]:
        return {node: self.nodes[node] for node in nodes}

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        self._check(size)
        return root_of(size, self.lookup)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        self._check(size)
        return range_hashes(inclusion_ranges(index, size), self.lookup)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        self._check(second)
        return range_hashes(consistency_ranges(first, second), self.lookup)

    def _check(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"the tree has {self.size} leaves, not {size}")


def _hashes_ok(proof: object) -> bool:
    return isinstance(proof, list | tuple) and all(
        isinstance(h, bytes) and len(h) == HASH_BYTES for h in proof
    )


def _size_ok(*values: object) -> bool:
    return all(type(v) is int and v >= 0 for v in values)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True when ``proof`` shows the leaf hash ``leaf`` at ``index`` in the tree of ``size`` leaves with
    ``root`` (RFC 9162 §2.1.3.2). Never raises on malformed input."""
    if not (_size_ok(index, size) and index < size and _hashes_ok(proof) and _hashes_ok([leaf, root])):
        return False
    fn, sn, result = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and result == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """True when ``proof`` shows the tree of ``first`` leaves with ``first_root`` a prefix of the tree of
    ``second`` leaves with ``second_root`` (RFC 9162 §2.1.4.2; equal sizes need an empty proof and equal
    roots). Never raises on malformed input."""
    if not (_size_ok(first, second) and 1 <= first <= second and _hashes_ok(proof)
            and _hashes_ok([first_root, second_root])):
        return False
    if first == second:
        return len(proof) == 0 and first_root == second_root
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == first_root and sr == second_root
