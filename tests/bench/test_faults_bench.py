"""`consortium bench faults` on a tiny sample: one seeded hub kill, checked, and its BENCHMARKS.md section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consortium.bench.faults import draw_fault, kill_points
from consortium.cli import app

pytestmark = pytest.mark.timeout(900)


def test_draws_are_seeded_and_within_each_points_passes() -> None:
    import random

    first = [draw_fault(random.Random(4), 5, 2.0) for _ in range(1)]
    assert first == [draw_fault(random.Random(4), 5, 2.0)]
    rng = random.Random(0)
    for _ in range(200):
        name, _, value = draw_fault(rng, 5, 2.0).partition(":")
        if name == "timed":
            assert 0 < float(value) < 2.0
        else:
            assert 1 <= int(value) <= kill_points(5)[name]


@pytest.mark.e2e
def test_one_seeded_kill_runs_checks_and_writes_its_section(tmp_path: Path) -> None:
    benchmarks, out = tmp_path / "BENCHMARKS.md", tmp_path / "faults.json"
    benchmarks.write_text("# Benchmarks\n\n<!-- bench:sim:begin -->\nkept\n<!-- bench:sim:end -->\n")
    result = CliRunner().invoke(app, ["bench", "faults", "--kills", "1", "--rounds", "3", "--seed", "2",
                                      "--no-scenarios", "--workdir", str(tmp_path / "work"),
                                      "--json", str(out), "--markdown", str(benchmarks)])
    assert result.exit_code == 0, result.output
    kills = json.loads(out.read_text())["hub_kills"]
    assert kills["kills"] == 1 and kills["all_checks"] == 1, kills
    text = benchmarks.read_text()
    assert "<!-- bench:faults:begin -->" in text and "kept" in text and "| runs completed | **1/1** |" in text
