"""`consortium hub`'s process-level set-up."""

from __future__ import annotations

import gc

from consortium.cli.hub import freeze_startup_heap


def test_the_startup_heap_leaves_the_cyclic_collectors_sight() -> None:
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 1000
        assert gc.collect() >= 0  # a full collection still runs, over what was made since
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0

