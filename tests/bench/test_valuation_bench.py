"""`consortium bench valuation` on a tiny configuration: it runs, measures, and writes its section."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from consortium.bench.valuation import _uneven_sizes
from consortium.cli import app


def test_a_tiny_configuration_runs_and_writes_its_section(tmp_path: Path) -> None:
    benchmarks, out = tmp_path / "BENCHMARKS.md", tmp_path / "valuation.json"
    benchmarks.write_text("# Benchmarks\n\n<!-- bench:sim:begin -->\nkept\n<!-- bench:sim:end -->\n")
    result = CliRunner().invoke(app, ["bench", "valuation", "--orgs", "3", "--rounds", "1", "--seeds", "1",
                                      "--cost-orgs", "4", "--json", str(out), "--markdown", str(benchmarks)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    (figures,) = report["validity"]["3"]
    assert -1.0 <= figures["spearman_gtg"] <= 1.0
    assert figures["evaluations"]["exact-shapley"] == 8
    assert set(figures["labels_last"]) == {"exact-shapley", "gtg-shapley", "leave-one-out"}
    (cost,) = report["cost"]["4"]
    assert cost["exact-shapley_evaluations"] == 16 and cost["gtg-shapley"] > 0
    text = benchmarks.read_text()
    assert "<!-- bench:valuation:begin -->" in text and "kept" in text and "| 3 |" in text


def test_uneven_shares_grow_and_fit_the_rows() -> None:
    sizes = _uneven_sizes(5, 1437)
    assert sizes == sorted(sizes) and sizes[-1] == 5 * sizes[0] and sum(sizes) <= 1437
