"""The hub's signing key as this org pinned it: ``<org dir>/hub-key.pub``, written on first sight (trust on
first use) from ``/api/health``. The ledger witness raises an alarm when the hub's key later differs; the
node's policy checks the hub's signed outcomes with the pinned key only."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("consortium.node.hub_pin")

HUB_KEY_FILE = "hub-key.pub"


class PinnedHubKey:
    """The pinned hub key of one org directory; ``health`` asks the hub for ``/api/health`` (first sight)."""

    def __init__(self, org_dir: Path, health: Callable[[], dict]) -> None:
        self.path = Path(org_dir) / HUB_KEY_FILE
        self.health = health

    def pinned(self) -> str | None:
        if not self.path.exists():
            return None
        return self.path.read_text(encoding="utf-8").strip() or None

    def pin(self, key: str) -> str:
        """Pin ``key`` unless a key is pinned already (created exclusively: two pinning threads of one node
        agree on the first); the pinned key."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return self.pinned() or key
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        log.info("pinned the hub's key in %s", self.path)
        return key

    def key(self) -> str:
        """The pinned key, pinning the hub's current one on first sight; ``ValueError`` when the hub names
        none."""
        pinned = self.pinned()
        if pinned is not None:
            return pinned
        current = self.health().get("hub_key")
        if not isinstance(current, str):
            raise ValueError("the hub names no signing key in /api/health")
        return self.pin(current)
