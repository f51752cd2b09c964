"""`consortium bench gpu`: the suite runs (on the CPU here, tiny), and asks for a GPU clearly when there is none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from consortium.cli import app

runner = CliRunner()


def test_tiny_gpu_suite_on_the_cpu_writes_every_configuration(tmp_path: Path) -> None:
    out, bench_md = tmp_path / "gpu.json", tmp_path / "BENCHMARKS.md"
    result = runner.invoke(
        app,
        [
            "bench",
            "gpu",
            "--device",
            "cpu",
            "--digits-clients",
            "20",
            "--cnn-clients",
            "3",
            "--samples-per-client",
            "6",
            "--rounds",
            "2",
            "--json",
            str(out),
            "--markdown",
            str(bench_md),
        ],
    )
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())["records"]
    assert [r["workload"] for r in records] == ["digits N=20", "cnn N=3x6"]
    assert records[1]["train_rows"] == 18
    for record in records:
        assert record["steady_s_per_round"] > 0 and record["centralized_epoch_s"] > 0
        assert record["ratio_vs_centralized"] == pytest.approx(
            record["steady_s_per_round"] / record["centralized_epoch_s"]
        )
    assert "<!-- bench:gpu:begin -->" in bench_md.read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    result = runner.invoke(app, ["bench", "gpu", "--digits-clients", "", "--cnn-clients", "3"])
    assert result.exit_code == 2
    assert "cuda" in result.output.lower()
