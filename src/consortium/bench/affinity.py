"""Which CPUs a benchmark's processes may run on (Linux ``sched_setaffinity``).

`bench scale` runs the hub and the processes that stand in for the member nodes on one machine. On a machine
with enough cores the hub can be given its own (``--hub-cpus``) and the node workers theirs
(``--worker-cpus``), so that the figures measure the hub and not the nodes' share of the same cores; the
reverse experiment (all of it on fewer cores) shows how much the figures depend on them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def cpu_list(text: str, available: Iterable[int] | None = None) -> frozenset[int]:
    """The CPUs a list such as ``"0-3,8"`` names (``taskset -c`` syntax); ValueError naming the problem for a
    malformed list or a CPU this process may not use (``available``, default: its own affinity)."""
    cpus: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"{text!r}: {part!r} is neither a CPU number nor a range such as 0-3")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"{text!r}: the range {part!r} runs backwards")
        cpus.update(range(first, last + 1))
    usable = set(os.sched_getaffinity(0) if available is None else available)
    if cpus - usable:
        raise ValueError(f"{text!r}: CPU {min(cpus - usable)} is not one this machine lets us use "
                         f"({', '.join(map(str, sorted(usable)))})")
    return frozenset(cpus)


def pin(pid: int, cpus: Iterable[int]) -> None:
    """Restrict every thread the process ``pid`` has now to ``cpus``; threads it starts later inherit it."""
    cpus = frozenset(cpus)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except ProcessLookupError:  # the thread ended meanwhile
            continue
