"""Content-addressed blob store for weights, updates and test sets (local filesystem)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from pathlib import Path

from consortium import faults
from consortium.atomic import stale_temporary, write_bytes_atomic


class BlobStore:
    """Blobs are stored under their SHA-256; writes are atomic (temp file + rename).

    A blob can also be *staged*: readable at once from memory, written (durably) only when :meth:`persist` is
    called, or dropped by :meth:`discard`. The run driver stages a round's params, sends them to the nodes,
    and persists them before the checkpoint that names them commits; an update upload is staged until its
    round is aggregated, then discarded (its row keeps the digest as a receipt of what the node sent).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._staged: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.sweep()

    def sweep(self) -> list[Path]:
        """Remove the temporary files that writers killed mid-write left (:func:`consortium.atomic.stale_temporary`:
        a dead process of this host, or untouched for an hour); the paths removed."""
        removed = []
        for path in self.root.glob("*/.*.tmp"):
            if stale_temporary(path):
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store ``data`` durably (fsynced before the rename) under its digest."""
        digest = hashlib.sha256(data).hexdigest()
        self._write(digest, data)
        return digest

    def stage(self, data: bytes) -> str:
        """Keep ``data`` in memory under its digest until :meth:`persist` writes it; readable meanwhile."""
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._staged[digest] = data
        return digest

    def persist(self, digests: Iterable[str]) -> None:
        """Write staged blobs durably (and stop holding them in memory); digests not staged are skipped."""
        for digest in digests:
            with self._lock:
                data = self._staged.get(digest)
            if data is None:
                continue
            faults.point("blob.persist")
            self._write(digest, data)
            with self._lock:
                self._staged.pop(digest, None)

    def discard(self, digests: Iterable[str]) -> None:
        """Forget staged blobs without writing them (digests not staged are skipped)."""
        with self._lock:
            for digest in digests:
                self._staged.pop(digest, None)

    def remove(self, digests: Iterable[str]) -> None:
        """Delete stored blobs that nothing needs any more (replicas' durable update uploads, once aggregated
        and checkpointed); missing ones are skipped."""
        for digest in digests:
            self.path(digest).unlink(missing_ok=True)

    def _write(self, digest: str, data: bytes) -> None:
        target = self.path(digest)
        if target.exists():
            return
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(target, data)
        except OSError as exc:  # e.g. the disk is full: say which store, what failed (nothing is left half-written)
            raise OSError(exc.errno, f"blob store {self.root} could not write blob {digest[:16]}...: "
                                     f"{exc.strerror or exc}") from exc

    def get(self, sha256: str) -> bytes:
        with self._lock:
            staged = self._staged.get(sha256)
        if staged is not None:
            return staged
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError as exc:
            raise KeyError(f"blob {sha256} is not in the store") from exc

    def exists(self, sha256: str) -> bool:
        with self._lock:
            if sha256 in self._staged:
                return True
        return self.path(sha256).exists()
