"""`consortium bench deploy`: what a real deployment adds to each round beyond the nodes' own compute.

Setup: a hub process on SQLite and 3 node processes on 127.0.0.1, the digits MLP of the demo. For each round r
the cycle time is the time from the start of round r to the start of round r+1 (dispatch, params delivery,
local evaluation of the received params and training, update upload and validation, aggregation, opening the
next round; the hub's test-set evaluation, checkpoint commit and ledger entry of round r run while the nodes
compute round r+1 and count wherever they delay it). The overhead is that cycle minus the slowest node's local
compute (the slowest fit plus the slowest evaluate, the two phases being sequential). The benchmark looks at
the run once a second only, so that its own watching adds no work to the rounds.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from consortium.bench.report import machine_info, update_benchmarks_md
from consortium.launch import Process, start_hub, start_node
from consortium.protocol import RoundMetrics
from consortium.scenario import ORGS, digits_spec, propose_and_approve, provision_digits

FLOWER_DEPLOY_OVERHEAD_S = 12.6


def round_overheads_ms(rounds: list[RoundMetrics]) -> list[float]:
    """Per-round overhead in ms: cycle time (start to next start) minus the slowest node compute."""
    ordered = sorted(rounds, key=lambda r: r.round)
    overheads = []
    for current, following in zip(ordered, ordered[1:]):
        cycle = following.opened_at - current.opened_at
        compute = current.max_fit_compute_s + current.max_eval_compute_s
        overheads.append(1000.0 * (cycle - compute))
    return overheads


def _one_repetition(rounds: int, console: Console, valuation: bool = False) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="consortium-bench-"))
    processes: list[Process] = []
    try:
        hub = start_hub(workdir / "hub")
        processes.append(hub)
        consortium = provision_digits(hub, workdir, ORGS)
        processes += [start_node(hub.url, consortium.org_dirs[org]) for org in ORGS]
        with hub.client() as admin:
            admin.wait_online(list(ORGS))
        spec = digits_spec("bench-deploy", ORGS, rounds, min_nodes=3,
                           algorithm={"name": "classifier", "hyperparameters": {
                               "layers": [64, 128, 10], "lr": 0.05, "local_epochs": 1, "batch_size": 32}},
                           **({"valuation": {"method": "gtg-shapley"}} if valuation else {}))
        project = propose_and_approve(consortium, spec)
        with hub.client() as admin:
            run = admin.start_run(project["id"])
            deadline = time.monotonic() + 600
            # A glance at the run once a second, not a per-round progress watch: the observer must not add
            # its own work to the rounds it measures.
            while (status := admin.run(run["id"]))["status"] == "running":
                if time.monotonic() > deadline:
                    raise RuntimeError("benchmark run did not finish within 10 minutes")
                time.sleep(1.0)
            if status["status"] != "completed":
                raise RuntimeError(f"benchmark run failed: {status['error']}")
            rows = admin.progress(run["id"]).rounds
        overheads = round_overheads_ms(rows)
        return {
            "median_round_overhead_ms": statistics.median(overheads),
            "overheads_ms": overheads,
            "median_cycle_ms": statistics.median(
                1000 * (b.opened_at - a.opened_at) for a, b in zip(rows, rows[1:])),
            "median_fit_compute_ms": statistics.median(1000 * r.max_fit_compute_s for r in rows),
            "median_eval_compute_ms": statistics.median(1000 * r.max_eval_compute_s for r in rows),
            "final_test_accuracy": rows[-1].test.get("accuracy"),
        }
    finally:
        for proc in reversed(processes):
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run_deploy_bench(
    rounds: int = 20,
    repeats: int = 3,
    json_path: Path | None = None,
    markdown_path: Path | None = None,
    console: Console | None = None,
    valuation: bool = False,
) -> dict[str, Any]:
    """Run the benchmark ``repeats`` times; report the median of the per-repetition medians. With
    ``valuation``, each repetition is followed by one whose spec values every round (GTG-Shapley on the hub),
    so the two are measured alternately in the same conditions."""
    console = console or Console()
    reps, valued = [], []
    for index in range(repeats):
        console.print(f"repetition {index + 1}/{repeats}: {rounds} rounds, 3 nodes on loopback")
        reps.append(_one_repetition(rounds, console))
        if valuation:
            console.print(f"repetition {index + 1}/{repeats} with valuation")
            valued.append(_one_repetition(rounds, console, valuation=True))
    result = {
        "suite": "deploy",
        "nodes": len(ORGS),
        "rounds": rounds,
        "repeats": repeats,
        "median_round_overhead_ms": statistics.median(r["median_round_overhead_ms"] for r in reps),
        "median_cycle_ms": statistics.median(r["median_cycle_ms"] for r in reps),
        "median_fit_compute_ms": statistics.median(r["median_fit_compute_ms"] for r in reps),
        "median_eval_compute_ms": statistics.median(r["median_eval_compute_ms"] for r in reps),
        "per_repetition_overhead_ms": [r["median_round_overhead_ms"] for r in reps],
        "final_test_accuracy": [r["final_test_accuracy"] for r in reps],
        "target_ms": 20.0,
        "machine": machine_info(),
    }
    if valued:
        result["valued_median_round_overhead_ms"] = statistics.median(r["median_round_overhead_ms"] for r in valued)
        result["valued_per_repetition_overhead_ms"] = [r["median_round_overhead_ms"] for r in valued]
    table = Table("metric", "value")
    for key in ("median_round_overhead_ms", "median_cycle_ms", "median_fit_compute_ms", "median_eval_compute_ms"):
        table.add_row(key, f"{result[key]:.2f}")
    table.add_row("per repetition overhead ms", ", ".join(f"{v:.2f}" for v in result["per_repetition_overhead_ms"]))
    console.print(table)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    if markdown_path is not None:
        update_benchmarks_md(Path(markdown_path), "deploy", _markdown(result))
    return result


def _markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"Command: `consortium bench deploy --rounds {result['rounds']} --repeats {result['repeats']}"
        f"{' --valuation' if 'valued_median_round_overhead_ms' in result else ''}`",
        f"Machine: {m['cpu']} ({m['cores']} cores), {m['python']}, torch {m['torch']}, {platform.system()}; "
        f"measured {m['date']}.",
        "",
        "| metric | median of repetitions |",
        "|---|---|",
        f"| round overhead (cycle minus slowest node compute) | **{result['median_round_overhead_ms']:.2f} ms** "
        f"(target ≤ {result['target_ms']:.0f} ms) |",
        f"| round cycle time | {result['median_cycle_ms']:.2f} ms |",
        f"| slowest node compute (evaluate received params + train) | {result['median_fit_compute_ms']:.2f} ms |",
        f"| per-repetition overhead medians | {', '.join(f'{v:.2f}' for v in result['per_repetition_overhead_ms'])} ms |",
        f"| target met | {'yes' if result['median_round_overhead_ms'] <= result['target_ms'] else 'no'} |",
        "",
        "Peer, for scale: Flower 1.41's deployment runtime on the same machine kind with 3 SuperNodes on loopback "
        "and the same digits MLP spends 12.6 to 15.6 s per round beyond 0.03 s of training (figure from the "
        "project's issue tracker, not re-measured in this run: no Flower deployment runs here). Ratio: "
        f"{FLOWER_DEPLOY_OVERHEAD_S * 1000 / result['median_round_overhead_ms']:.0f}x less overhead per round "
        "than Flower's lower figure.",
    ]
    if "valued_median_round_overhead_ms" in result:
        valued = result["valued_median_round_overhead_ms"]
        lines.insert(10, f"| round overhead with GTG-Shapley valuation of every round (alternate repetitions) | "
                         f"**{valued:.2f} ms** ({valued / result['median_round_overhead_ms']:.2f}x the plain run's; per "
                         f"repetition {', '.join(f'{v:.2f}' for v in result['valued_per_repetition_overhead_ms'])} ms) |")
    return "\n".join(lines)
