"""Kill points: parsed from ``CONSORTIUM_KILL_AT``, fired the N-th time (SIGKILL), armed from a file anew."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from consortium.faults import ENV, parse

PASS_POINTS = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from consortium import faults
    for i in range(1, 6):
        if len(sys.argv) > 1 and i == 3:
            Path(sys.argv[1]).write_text("b:1")  # armed anew: counts start again
            time.sleep(0.01)
        print(i, flush=True)
        faults.point("a")
        faults.point("b")
""")


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PASS_POINTS, *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_parse_reads_names_and_counts_and_names_a_bad_item() -> None:
    assert parse("a:2, b.c:1") == {"a": 2, "b.c": 1}
    assert parse(None) == {} and parse("") == {}
    for bad in ("a", "a:0", ":1", "a:x"):
        with pytest.raises(ValueError, match=ENV):
            parse(bad)


def test_the_process_is_killed_the_nth_time_it_passes_the_point() -> None:
    done = run({ENV: "a:3"})
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["1", "2", "3"]
    assert "fault point a reached 3 time(s): SIGKILL" in done.stderr


def test_without_the_variable_nothing_fires() -> None:
    done = run({ENV: ""})
    assert done.returncode == 0 and done.stdout.split() == ["1", "2", "3", "4", "5"]


def test_a_kill_file_arms_the_points_when_it_changes(tmp_path) -> None:
    kill_file = tmp_path / "kill-at"
    kill_file.write_text("")
    done = run({ENV: f"@{kill_file}"}, str(kill_file))
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["1", "2", "3"], "b:1 fires at the first pass after the file changed"
