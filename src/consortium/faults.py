"""Named kill points for the fault harness (``consortium bench faults``, ``tests/faults/``).

A process started with ``CONSORTIUM_KILL_AT="NAME:N[,NAME:N...]"`` sends itself SIGKILL the N-th time it
passes the point NAME (counted per process), so a harness can crash a hub or a node at an exact moment: a
phase opening, an upload in flight, the checkpoint, a ledger write, a blob write. Without the variable every
point is one dictionary lookup that finds nothing. Points the hub passes: ``phase.open``, ``round.close``,
``ledger.record``, ``upload.staged``, ``upload.committed``, ``blob.persist``, ``file.written`` (a blob's
temporary file written and synced, not yet renamed), ``commit`` and ``commit.before`` (every database
transaction; :func:`watch_commits`). The node passes ``node.stats``, ``node.init``, ``node.fit`` and
``node.evaluate`` when it starts a task of that kind.

``CONSORTIUM_KILL_AT="@PATH"`` arms the points from the file PATH instead, read again whenever it changes
(counts start afresh then; an empty or missing file arms nothing): a harness arms a running process for its
next run without restarting it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections import Counter

ENV = "CONSORTIUM_KILL_AT"


def parse(text: str | None) -> dict[str, int]:
    """``"a:2,b:1"`` -> ``{"a": 2, "b": 1}``; ``ValueError`` naming a malformed item."""
    armed: dict[str, int] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, _, count = item.strip().partition(":")
        if not name or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{ENV}: {item!r} is not NAME:N with N >= 1")
        armed[name] = int(count)
    return armed


_setting = os.environ.get(ENV) or ""
_file = _setting[1:] if _setting.startswith("@") else None
_armed = parse(None if _file else _setting)
_hits: Counter[str] = Counter()
_lock = threading.Lock()
_seen: tuple[int, int] | None = None


def _reread() -> None:
    """With a kill file: the points it arms now (counts start afresh whenever it changed)."""
    global _armed, _seen
    try:
        stat = os.stat(_file)
        seen = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        seen = None
    if seen == _seen:
        return
    try:
        text = open(_file, encoding="utf-8").read() if seen else ""
    except OSError:
        text = ""
    _armed, _seen = parse(text), seen
    _hits.clear()


def point(name: str) -> None:
    """Pass the kill point ``name``: SIGKILL this process if this is the armed pass."""
    if _file is not None:
        with _lock:
            _reread()
    if name not in _armed:
        return
    with _lock:
        _hits[name] += 1
        fire = _hits[name] == _armed.get(name)
    if fire:
        sys.stderr.write(f"fault point {name} reached {_armed[name]} time(s): SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def watch_commits() -> None:
    """Pass ``commit.before`` and ``commit`` around every ORM session commit (only when one is armed)."""
    if _file is None and not {"commit", "commit.before"} & _armed.keys():
        return
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    event.listen(Session, "before_commit", lambda _session: point("commit.before"))
    event.listen(Session, "after_commit", lambda _session: point("commit"))
