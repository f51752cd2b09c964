"""`consortium bench sim`: every configuration runs in its own measured process; records, JSON and markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from consortium.bench.sim import run_sim_bench


def test_small_sim_bench_measures_each_engine_and_the_centralized_epoch(tmp_path: Path) -> None:
    out, bench_md = tmp_path / "sim.json", tmp_path / "BENCHMARKS.md"
    records = run_sim_bench(
        [5],
        ["vectorized", "loop"],
        repeats=2,
        rounds=3,
        json_path=out,
        markdown_path=bench_md,
        console=Console(file=open(tmp_path / "log.txt", "w")),
    )
    by_engine = {r["engine"]: r for r in records}
    assert set(by_engine) == {"centralized", "vectorized", "loop"}
    for record in records:
        assert record["steady_s_per_round"] > 0 and record["peak_rss_mb"] > 100
        assert len(record["per_repetition_acc"]) == 2
    assert by_engine["centralized"]["ratio_vs_centralized"] == 1.0
    assert by_engine["vectorized"]["ratio_vs_flower"] is None
    # same spec seed per repetition: the vectorised engine reaches the loop engine's accuracy
    assert by_engine["vectorized"]["per_repetition_acc"] == pytest.approx(
        by_engine["loop"]["per_repetition_acc"], abs=1e-9
    )
    assert json.loads(out.read_text())["records"] == records
    assert "<!-- bench:sim:begin -->" in bench_md.read_text()


def test_a_flower_python_that_does_not_exist_is_refused_before_any_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--flower-python"):
        run_sim_bench([5], ["loop"], flower_python=str(tmp_path / "no-python"))
