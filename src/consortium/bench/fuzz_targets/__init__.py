"""Fuzz targets: one per parser that takes network bytes, for atheris (`consortium bench atheris`) and for the
tests, which replay the corpus kept in the repo (``tests/fuzz_corpus/<target>/``) without atheris.

A target's ``check(data)`` runs the parser, and what the hub or node does next with its result, on ``data``;
it returns when the parser produced a valid object or refused the bytes with one of its documented error
types, and lets anything else propagate: an undocumented exception, like a hang or unbounded memory (which
the runner catches with libFuzzer's timeouts and RSS limit), is a finding. ``seeds()`` gives small valid and
interesting inputs by name: the start of the corpus.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    """What is parsed, and the error types it may raise (its documented refusals)."""
    check: Callable[[bytes], None]
    seeds: Callable[[], dict[str, bytes]]


_MODULES = {
    "safetensors": "tensors",
    "signature": "signatures",
    "strict_json": "documents",
    "wire": "documents",
    "spec": "documents",
    "card": "documents",
    "table": "tables_target",
    "secagg": "secagg_target",
}
TARGET_NAMES: tuple[str, ...] = tuple(_MODULES)


def load(name: str) -> Target:
    """The target ``name`` (its module is imported only now: atheris instruments what is imported after it
    starts); KeyError for an unknown name."""
    module = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    return module.TARGETS[name]
