"""Who masks with whom: the complete graph (SecAgg) or a k-regular graph (SecAgg+, Bell et al. 2020).

SecAgg+ lets each client agree masks and share secrets with ``k`` neighbours instead of all ``n - 1`` others,
so a client's work grows with ``k`` (about log n in the paper) rather than n. The graph here is a Harary
graph on a public random ordering: the clients, shuffled with ``graph_seed``, sit on a ring and each is joined
to the ``k / 2`` nearest on either side. Everyone, server included, derives it from the round's configuration.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def neighbours(client_ids: Sequence[str], degree: int | None, graph_seed: int) -> dict[str, frozenset[str]]:
    """Each client's neighbours (itself excluded); ``degree`` None or ``n - 1`` is the complete graph."""
    ids = sorted(client_ids)
    n = len(ids)
    if len(set(ids)) != n:
        raise ValueError("client ids must be distinct")
    if degree is None or degree >= n - 1:
        everyone = frozenset(ids)
        return {cid: everyone - {cid} for cid in ids}
    if degree < 2 or degree % 2:
        raise ValueError(f"degree must be even and at least 2 (or n - 1 = {n - 1}), got {degree}")
    ring = list(ids)
    random.Random(graph_seed).shuffle(ring)
    half = degree // 2
    return {
        cid: frozenset(ring[(i + step) % n] for step in range(-half, half + 1) if step)
        for i, cid in enumerate(ring)
    }
