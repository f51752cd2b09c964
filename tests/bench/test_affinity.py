"""CPU lists in ``taskset -c`` syntax, and pinning every thread of a running process to them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from consortium.bench.affinity import cpu_list, pin


def test_a_cpu_list_names_single_cpus_and_ranges() -> None:
    assert cpu_list("0-2,5", available=range(8)) == {0, 1, 2, 5}
    assert cpu_list(" 3 ", available=range(8)) == {3}
    own = min(os.sched_getaffinity(0))
    assert cpu_list(str(own)) == {own}, "by default, the CPUs this process may use"


@pytest.mark.parametrize(("text", "problem"), [
    ("", "neither a CPU number nor a range"),
    ("a-b", "neither a CPU number nor a range"),
    ("1-", "neither a CPU number nor a range"),
    ("3-1", "runs backwards"),
    ("0,9", "CPU 9 is not one this machine lets us use (0, 1)"),
])
def test_a_bad_cpu_list_is_refused_naming_its_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        cpu_list(text, available=[0, 1])


def test_pinning_reaches_every_thread_of_a_process_and_those_it_starts_later() -> None:
    first = min(os.sched_getaffinity(0))
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "print('again', flush=True)\n"
        "sys.stdin.readline()\n")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        pin(child.pid, frozenset({first}))
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "again"
        threads = [int(t.name) for t in Path(f"/proc/{child.pid}/task").iterdir()]
        assert len(threads) >= 3
        assert all(os.sched_getaffinity(tid) == {first} for tid in threads)
    finally:
        child.kill()
        child.wait()
