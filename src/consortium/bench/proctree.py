"""Running a benchmark configuration as a child process while sampling the memory of its whole process tree.

Flower (through Ray) and our Ray engine spread one configuration over many processes, so the peak resident set
of the child alone says little. Every ``interval`` seconds this sums over the child and all its descendants
the RSS (pages shared between processes counted in each) and the PSS (shared pages split between the sharers,
the fairest total), and it estimates how many cores processes outside the tree kept busy meanwhile: on a shared
machine, above zero means every time measured in that configuration is inflated.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Measured:
    returncode: int
    output_tail: str
    """The last characters of the child's stderr, or of its stdout when stderr is empty."""
    mem: dict[str, float]
    """``peak_tree_rss_mb``, ``peak_tree_pss_mb``, ``max_procs_in_tree``, ``wall_s``, ``other_avg_cores``."""


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (which may itself hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, from one scan of ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending += children.get(pid, [])
    return tree


def _rss_pss_kib(pid: int) -> tuple[int, int]:
    values = {"Rss:": 0, "Pss:": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(" ")
            if key in values:
                values[key] = int(rest.split()[0])
    except (OSError, ValueError):
        pass
    return values["Rss:"], values["Pss:"]


def _cpu_ticks(pid: int) -> int:
    fields = _stat_fields(pid)
    return 0 if fields is None else int(fields[11]) + int(fields[12])


def _machine_busy_ticks() -> int:
    """Non-idle CPU time of the whole machine since boot (all fields but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values) - values[3] - values[4]


def machine_busy_s() -> float:
    """Non-idle CPU seconds of the whole machine since boot (an in-process bench subtracts its own)."""
    return _machine_busy_ticks() / _TICKS_PER_S


class _Sampler(threading.Thread):
    def __init__(self, root: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.stopped = threading.Event()
        self.peak_rss = self.peak_pss = self.peak_procs = 0
        self.cpu: dict[int, int] = {}

    def run(self) -> None:
        while not self.stopped.is_set():
            tree = descendants(self.root)
            sizes = [_rss_pss_kib(pid) for pid in tree]
            self.peak_rss = max(self.peak_rss, sum(s[0] for s in sizes))
            self.peak_pss = max(self.peak_pss, sum(s[1] for s in sizes))
            self.peak_procs = max(self.peak_procs, len(tree))
            for pid in tree:
                self.cpu[pid] = max(self.cpu.get(pid, 0), _cpu_ticks(pid))
            self.stopped.wait(self.interval)


def run_measured(
    command: Sequence[str], env: Mapping[str, str], timeout_s: float, interval: float = 0.2
) -> Measured:
    """Run ``command`` to the end (its whole session is killed past ``timeout_s``) and measure its tree."""
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        busy_before, started = _machine_busy_ticks(), time.perf_counter()
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=dict(env), start_new_session=True)
        sampler = _Sampler(child.pid, interval)
        sampler.start()
        try:
            returncode = child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
        finally:
            sampler.stopped.set()
            sampler.join()
        wall_s = time.perf_counter() - started
        other_s = max((_machine_busy_ticks() - busy_before - sum(sampler.cpu.values())) / _TICKS_PER_S, 0.0)
        tails = []
        for stream in (stderr, stdout):
            stream.seek(0)
            tails.append(stream.read().decode(errors="replace")[-2000:])
    mem = {
        "peak_tree_rss_mb": sampler.peak_rss / 1024,
        "peak_tree_pss_mb": sampler.peak_pss / 1024,
        "max_procs_in_tree": float(sampler.peak_procs),
        "wall_s": wall_s,
        "other_avg_cores": other_s / wall_s if wall_s > 0 else 0.0,
    }
    return Measured(returncode, tails[0] or tails[1], mem)
