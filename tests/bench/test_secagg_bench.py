"""`bench secagg` on a small round: the SecAgg mean equals the plain mean, the report names every round."""

from __future__ import annotations

import torch

from consortium.bench import secagg
from consortium.bench.report import machine_info


def test_small_bench_runs_and_recovers_the_mean(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(secagg, "LAYERS", [64, 8, 10])
    result = secagg.run_secagg_bench(clients=5, threshold=3, dropouts=(2,), repeats=1, rounds=2)
    torch.set_num_threads(1)
    assert set(result["configs"]) == {"plain", "secagg", "secagg d=2"}
    assert result["max_abs_error_vs_plain_mean"] < 1e-6
    assert result["correctness"]["exact"] == 2
    text = secagg.report_markdown(result, machine_info(), "consortium bench secagg")
    assert "| secagg d=2 |" in text and "2 of 2 random rounds" in text
