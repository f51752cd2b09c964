"""Atomic file updates: a reader sees the old file or the new one, never half of either.

Nodes keep their registries and approvals in small JSON files that a running agent reads while the CLI
rewrites them, and the hub keeps blobs that a crash must not leave truncated.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from consortium import faults

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def temporary_prefix(path: Path) -> str:
    """The name every temporary file of a write to ``path`` starts with: the writer's host and process id
    follow the target's stem, so a crashed writer's leftovers can be told from a live writer's
    (:func:`stale_temporary`)."""
    return f".{path.stem}-{socket.gethostname()}-{os.getpid()}-"


def stale_temporary(path: Path, older_than_s: float = 3600.0) -> bool:
    """Whether ``path`` is the temporary file of a write whose writer is gone: a process of this host that no
    longer runs, or (another host's, or a name that does not parse) not touched for ``older_than_s``."""
    name = path.name
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    writer = name[1:-4].partition("-")[2].rpartition("-")[0]  # "HOST-PID" between the stem and mkstemp's part
    host, _, pid = writer.rpartition("-")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False  # alive
    try:
        return time.time() - path.stat().st_mtime > older_than_s
    except FileNotFoundError:
        return False


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (temp file in the same directory, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        faults.point("file.written")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock (``<path>.lock``) between processes while ``path`` is read and rewritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    with open(path.parent / f"{path.name}.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
