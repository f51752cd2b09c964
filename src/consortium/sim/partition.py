"""Parsing the simulator's partition option (``iid``, ``dirichlet:ALPHA``, ``shards:K``) into client index sets."""

from __future__ import annotations

import math

import numpy as np

from consortium.fl.core import FLError
from consortium.fl.data import dirichlet_label_partition, iid_partition, shard_partition

PARTITION_HELP = "iid | dirichlet:ALPHA (label skew, ALPHA > 0) | shards:K (K label-sorted shards per client)"


def partition(
    kind: str, labels: np.ndarray | None, num_samples: int, num_clients: int, seed: int
) -> list[np.ndarray]:
    """Split ``num_samples`` rows across ``num_clients`` as ``kind`` says; FLError with the reason otherwise."""
    name, _, argument = kind.partition(":")
    try:
        if name == "iid" and not argument:
            return iid_partition(num_samples, num_clients, seed)
        if name == "dirichlet":
            _need_labels(labels, kind)
            alpha = _number(argument, kind, float)
            return dirichlet_label_partition(labels, num_clients, alpha, seed)
        if name == "shards":
            _need_labels(labels, kind)
            return shard_partition(labels, num_clients, _number(argument, kind, int), seed)
    except ValueError as exc:
        raise FLError(f"partition {kind!r}: {exc}") from exc
    raise FLError(f"unknown partition {kind!r}; use {PARTITION_HELP}")


def _need_labels(labels: np.ndarray | None, kind: str) -> None:
    if labels is None:
        raise FLError(f"partition {kind!r} splits by label, but the dataset has no labels; use iid")


def _number(text: str, kind: str, cast: type) -> float | int:
    try:
        value = cast(text)
    except ValueError:
        raise FLError(f"partition {kind!r}: {text!r} is not a valid {cast.__name__}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise FLError(f"partition {kind!r}: the value must be finite")
    return value
