"""``consortium bench faults``: runs the hub kills, the driving-replica kills and the other scenarios, and writes
their BENCHMARKS.md sections (``faults``, ``faults-replicas`` and ``faults-scenarios``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from consortium.bench import fault_scenarios as scenarios_
from consortium.bench.faultlab import Lab
from consortium.bench.faults import kills_markdown, reference_run, run_hub_kills
from consortium.bench.replica_kills import replica_kills_bench, replica_kills_markdown
from consortium.bench.report import machine_info

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def run_faults_bench(workdir: Path, *, kills: int, seed: int, rounds: int, scenarios: bool,
                     db_url: str | None = None, pg_admin_url: str | None = None,
                     console: Console | None = None, budget_s: float | None = None,
                     replica_kills: int = 0) -> dict[str, Any]:
    """The whole fault bench under ``workdir``; the report (``hub_kills``, ``replica_kills``, ``scenarios``,
    ``machine``)."""
    console = console or Console()
    report: dict[str, Any] = {"machine": machine_info(), "scenarios": []}
    pg = pg_admin_url or os.environ.get("CONSORTIUM_TEST_PG", PG_ADMIN_URL)
    if kills or scenarios:
        lab = Lab.open(workdir / "kills", db_url)
        try:
            lab.start_nodes()
            if kills:
                report["hub_kills"] = run_hub_kills(lab, kills, seed, rounds, console, budget_s)
                report["hub_kills"]["database"] = "PostgreSQL" if db_url else "SQLite"
            if scenarios:
                reference = reference_run(lab, rounds)[0]
                for phase in scenarios_.NODE_PHASES:
                    _scenario(report, console, lambda phase=phase: scenarios_.node_kill(lab, phase))
                _scenario(report, console, lambda: scenarios_.proxy_run(lab, rounds, reference, seed))
        finally:
            lab.close()
    if replica_kills:
        report["replica_kills"] = replica_kills_bench(workdir / "replicas", pg, replica_kills, seed, rounds, console)
    if scenarios:
        _scenario(report, console, lambda: scenarios_.pg_restart(workdir / "pg", pg, rounds))
        _scenario(report, console, lambda: scenarios_.disk_full(workdir / "disk", rounds, reference))
    return report


def _scenario(report: dict[str, Any], console: Console, run) -> None:
    started = time.monotonic()
    try:
        result = run()
    except Exception as exc:  # a scenario that could not run is reported, not hidden
        result = {"scenario": getattr(run, "__name__", "scenario"), "ok": False,
                  "problems": [f"{type(exc).__name__}: {exc}"]}
    result["seconds"] = round(time.monotonic() - started, 1)
    report["scenarios"].append(result)
    console.print(f"{result['scenario']}: {'ok' if result.get('ok') else 'FAILED'} {result}", markup=False)


def all_ok(report: dict[str, Any]) -> bool:
    kills = [report[k] for k in ("hub_kills", "replica_kills") if k in report]
    return all(k["all_checks"] == k["kills"] for k in kills) and all(s.get("ok") for s in report["scenarios"])


def sections(report: dict[str, Any], command: str) -> list[tuple[str, str]]:
    """``(suite, markdown)`` of each section the report has."""
    out = []
    if "hub_kills" in report:
        out.append(("faults", kills_markdown(report["hub_kills"], report["machine"], command)))
    if "replica_kills" in report:
        out.append(("faults-replicas", replica_kills_markdown(report["replica_kills"], report["machine"], command)))
    if report["scenarios"]:
        out.append(("faults-scenarios", scenarios_markdown(report, command)))
    return out


def scenarios_markdown(report: dict[str, Any], command: str) -> str:
    m = report["machine"]
    lines = [f"Command: `{command}`",
             f"Machine: {m['cpu']} ({m['cores']} cores, shared with other engineers' test runs while measured), "
             f"{m['python']}; measured {m['date']}.", "",
             "| fault | outcome | figures |", "|---|---|---|"]
    skip = {"scenario", "ok", "problems"}
    for s in report["scenarios"]:
        figures = ", ".join(f"{k} {v}" for k, v in s.items() if k not in skip)
        outcome = "**held**" if s.get("ok") else "**failed**: " + "; ".join(s.get("problems", []))
        lines.append(f"| {s['scenario']} | {outcome} | {figures} |")
    return "\n".join(lines)
