"""`consortium bench faults --replica-kills 1`: two replicas behind HAProxy on a scratch PostgreSQL database,
the driving one SIGKILLed once at a seeded moment, the run checked, and the BENCHMARKS.md section written."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consortium.bench.replica_kills import draw_kill
from consortium.cli import app

pytestmark = pytest.mark.timeout(900)


def test_kill_moments_are_seeded_and_within_the_run() -> None:
    assert [draw_kill(random.Random(3), 5, 0.2) for _ in range(3)] == [draw_kill(random.Random(3), 5, 0.2)] * 3
    rng = random.Random(0)
    for _ in range(200):
        after_round, delay = draw_kill(rng, 5, 0.2)
        assert 1 <= after_round <= 3 and 0.0 <= delay <= 0.2


@pytest.mark.e2e
@pytest.mark.postgres
def test_one_driving_replica_kill_runs_checks_and_writes_its_section(
        haproxy: None, pg_admin_url: str, tmp_path: Path) -> None:
    benchmarks, out = tmp_path / "BENCHMARKS.md", tmp_path / "faults.json"
    benchmarks.write_text("# Benchmarks\n\n<!-- bench:sim:begin -->\nkept\n<!-- bench:sim:end -->\n")
    result = CliRunner().invoke(app, ["bench", "faults", "--kills", "0", "--replica-kills", "1", "--rounds", "5",
                                      "--seed", "1", "--no-scenarios", "--pg", pg_admin_url,
                                      "--workdir", str(tmp_path / "work"), "--json", str(out),
                                      "--markdown", str(benchmarks)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    kills = report["replica_kills"]
    assert "hub_kills" not in report and report["scenarios"] == []
    assert kills["kills"] == 1 and kills["all_checks"] == 1, kills
    (trial,) = [t for t in kills["trials"] if t["fired"]]
    assert 0 < trial["takeover_s"] <= kills["lease_s"] * 4 / 3 + 5, trial
    assert kills["takeover_median_s"] == kills["takeover_max_s"] == trial["takeover_s"]
    text = benchmarks.read_text()
    assert "<!-- bench:faults-replicas:begin -->" in text and "kept" in text
    assert "| runs completed | **1/1** |" in text and "<!-- bench:faults:begin -->" not in text
