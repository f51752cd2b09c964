"""`consortium bench scale` on a small seeded sample: a real hub, 20 signed node workers in 2 processes, 2 rounds;
every round completes, no request fails, every worker gets every fit task, and the report has its row. The same
with 2 hub replicas on PostgreSQL behind HAProxy, and the CLI refusing replicas on SQLite."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consortium.bench import scale
from consortium.cli import app
from consortium.bench.report import machine_info
from consortium.bench.scale_report import report_markdown
from consortium.bench.scale_setup import org_names, scale_spec


def test_twenty_workers_finish_two_rounds_without_a_failed_request() -> None:
    cfg = scale.ScaleConfig(rounds=2, repeats=1, processes=2, compute_spread_ms=100.0)
    result = scale.measure_size(20, "sqlite", cfg, report=lambda _line: None)
    assert result["failed_requests"] == 0, result["failures"]
    assert result["rounds_completed"] == result["rounds_planned"] == 2
    (rep,) = result["per_repetition"]
    assert rep["status"] == "completed" and rep["deliveries"] == 20 * 2
    assert set(rep["delivery_p99_ms_by_round"]) == {1, 2}
    # A round's task comes with new params; its terms (spec, signed approval) only in round 1.
    first, second = rep["delivery_bytes_by_round"][1], rep["delivery_bytes_by_round"][2]
    spec = scale_spec(org_names(20), cfg.rounds, cfg.hidden, cfg.round_timeout)
    assert first - second > len(spec.model_dump_json())
    assert 0 < result["delivery_p50_ms"] <= result["delivery_p99_ms"]
    assert result["hub_peak_rss_mb"] > 0 and result["hub_cpu_ms_per_round"] > 0
    # The slowest of 20 seeded draws in [0, 100) ms is the part of the cycle that is not overhead.
    assert rep["cycle_ms"] - rep["overhead_ms"] > 50
    body = report_markdown({"suite": "scale", "baseline": None, "config": cfg.__dict__, "results": [result]},
                           machine_info(), "consortium bench scale --nodes 20")
    assert "| sqlite | 1 | 20 | 1 |" in body and "2 of 2" in body and "one after another" in body
    assert "- sqlite, N = 20: 1: " in body and ", 2: " in body


def _needs_haproxy_and_postgres() -> None:
    import psycopg

    missing = []
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        missing.append("haproxy is not installed (apt-get install haproxy)")
    try:
        psycopg.connect(scale.PG_ADMIN_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        missing.append(f"PostgreSQL not reachable: {exc}")
    if missing and os.environ.get("CI"):
        pytest.fail("; ".join(missing) + " (CI needs both: .ci/run provides them)")
    if missing:
        pytest.skip("; ".join(missing))


@pytest.mark.e2e
@pytest.mark.postgres
def test_two_replicas_behind_the_proxy_serve_four_workers_without_a_failed_request() -> None:
    _needs_haproxy_and_postgres()
    cfg = scale.ScaleConfig(rounds=2, repeats=1, processes=2, replicas=2, lease_s=5.0)
    result = scale.measure_size(4, "postgres", cfg, report=lambda _line: None)
    assert result["replicas"] == 2 and len(result["hub_peak_rss_mb_each"]) == 2
    assert result["failed_requests"] == 0, result["failures"]
    assert result["rounds_completed"] == result["rounds_planned"] == 2
    (rep,) = result["per_repetition"]
    assert rep["status"] == "completed" and rep["deliveries"] == 4 * 2
    assert result["hub_peak_rss_mb"] == max(result["hub_peak_rss_mb_each"]) > 0
    assert result["hub_cpu_ms_per_round"] > 0
    body = report_markdown({"suite": "scale", "baseline": None, "config": cfg.__dict__, "results": [result]},
                           machine_info(), "consortium bench scale --nodes 4 --db postgres --replicas 2")
    assert "| postgres | 2 | 4 | 1 |" in body and "2 hub replicas" in body


def test_the_cli_refuses_replicas_on_sqlite() -> None:
    refused = CliRunner().invoke(app, ["bench", "scale", "--nodes", "4", "--db", "sqlite", "--replicas", "2"])
    assert refused.exit_code == 2
    assert "--replicas 2: hub replicas need PostgreSQL" in " ".join(refused.output.split())
    with pytest.raises(ValueError, match="need PostgreSQL"):
        with scale.hubs("sqlite", Path("unused"), scale.ScaleConfig(replicas=2)):
            pass


def test_the_hub_and_the_workers_run_on_the_cpus_they_are_given(tmp_path: Path) -> None:
    first = min(os.sched_getaffinity(0))
    cfg = scale.ScaleConfig(processes=1, hub_cpus=(first,), worker_cpus=(first,))
    with scale.hubs("sqlite", tmp_path, cfg) as (hub, processes):
        assert os.sched_getaffinity(processes[0].popen.pid) == {first}
        workers = scale.start_workers(hub, [], tmp_path, cfg)
        try:
            assert [os.sched_getaffinity(p.pid) for p in workers.procs] == [{first}]
        finally:
            workers.stop()


def test_the_cli_refuses_a_bad_cpu_list_naming_its_option() -> None:
    refused = CliRunner().invoke(app, ["bench", "scale", "--nodes", "4", "--db", "sqlite", "--worker-cpus", "3-1"])
    assert refused.exit_code == 2
    assert "--worker-cpus: '3-1': the range '3-1' runs backwards" in " ".join(refused.output.split())


def test_percentiles_interpolate_between_ranks() -> None:
    assert scale.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert scale.percentile([5.0], 0.99) == 5.0
    assert scale.overhead_target_ms(100) == 100.0 and scale.overhead_target_ms(1000) == 1000.0


def test_a_worker_update_is_the_params_moved_by_a_seeded_step() -> None:
    import torch

    from consortium.bench.scale_worker import perturbed

    params = {"w": torch.zeros(3, 2), "b": torch.ones(2)}
    one, again, other = perturbed(params, 7), perturbed(params, 7), perturbed(params, 8)
    assert all(torch.equal(one[k], again[k]) for k in params)
    assert not torch.equal(one["w"], other["w"])
    assert float((one["w"] - params["w"]).abs().max()) < 0.01


def test_simulated_compute_is_a_seeded_draw_per_org_and_task() -> None:
    from consortium.bench.scale_worker import simulated_compute_ms

    flat = {"compute_ms": 20.0}
    assert simulated_compute_ms(flat, "org-1", 5) == 20.0
    spread = {"compute_ms": 20.0, "compute_spread_ms": 100.0}
    draws = [simulated_compute_ms(spread, f"org-{i}", 5) for i in range(200)]
    assert draws == [simulated_compute_ms(spread, f"org-{i}", 5) for i in range(200)]
    assert all(20.0 <= d < 120.0 for d in draws) and len(set(draws)) == 200
    assert max(draws) - min(draws) > 80


def test_each_kind_of_scale_run_writes_its_own_section() -> None:
    assert scale.ScaleConfig().suite == "scale"
    assert scale.ScaleConfig(replicas=2).suite == "scale-replicas"
    assert scale.ScaleConfig(compute_spread_ms=500.0).suite == "scale-spread"
    assert scale.ScaleConfig(replicas=2, compute_spread_ms=500.0).suite == "scale-replicas-spread"
