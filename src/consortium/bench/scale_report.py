"""`consortium bench scale`'s BENCHMARKS.md section: one row per database, hub replicas and node count,
targets and ratios."""

from __future__ import annotations

import os
import statistics
from typing import Any

from consortium.bench.scale import TARGETS, overhead_target_ms


def _load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def _ok(met: bool) -> str:
    return "yes" if met else "**no**"


def _p99_by_round(results: list[dict[str, Any]]) -> list[str]:
    """Each size's delivery p99 per round (median over repetitions): the first round's tasks carry their
    terms (spec, signed approval) to every node, later rounds' tasks come brief."""
    lines = ["", "Delivery p99 by round (median over repetitions):", ""]
    for r in results:
        by_round: dict[str, list[float]] = {}
        for rep in r["per_repetition"]:
            for number, p99 in rep.get("delivery_p99_ms_by_round", {}).items():
                by_round.setdefault(str(number), []).append(p99)
        if by_round:
            rounds = ", ".join(f"{number}: {statistics.median(values):.0f} ms"
                               for number, values in sorted(by_round.items(), key=lambda item: int(item[0])))
            lines.append(f"- {r['db']}, N = {r['nodes']}: {rounds}")
    return lines if len(lines) > 3 else []


def _hubs(replicas: int) -> str:
    if replicas == 1:
        return "One hub process (uvicorn)"
    return (f"{replicas} hub replicas (`consortium hub --replica`, one PostgreSQL database and blob store) "
            "behind HAProxy, round-robin (hub CPU: the sum over the replicas; hub peak RSS: the largest replica's),")


def _compute(cfg: dict[str, Any]) -> str:
    spread = cfg.get("compute_spread_ms", 0.0)
    if not spread:
        return f"{cfg['compute_ms']:.0f} ms simulated compute: every update arrives at once, the hub's worst case"
    return (f"{cfg['compute_ms']:.0f} ms simulated compute plus a seeded uniform draw in [0, {spread:.0f}) ms "
            "per task: nodes finish one after another, as real ones do")


def report_markdown(result: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    """The section: what ran, a table of the measures with the issue's targets, ratios to the baseline size."""
    cfg = result["config"]
    lines = [
        f"Command: `{command}`",
        f"Machine: {machine['cpu']} ({machine['cores']} cores), {machine['python']}, torch {machine['torch']}; "
        f"measured {machine['date']}. Load average {_load()} at the end of the run, on {machine['cores']} "
        "cores (the hub, the workers and the database share them): wall-clock figures are upper bounds, the "
        "hub's CPU per round is the steadier measure.",
        "",
        f"{_hubs(cfg.get('replicas', 1))} and N lightweight node workers in {cfg['processes']} processes on "
        "the same machine: real HTTP, real Ed25519 request signatures, real safetensors updates of a classifier "
        f"(64 -> {cfg['hidden']} -> 10), FedAvg, {cfg['rounds']} rounds per run; local training is a seeded "
        f"perturbation of the received params ({_compute(cfg)}). Each repetition "
        "is one run on the same hub; figures are medians over repetitions (the repetitions column says how "
        "many). Delivery latency: from a phase's opening (before its task rows are written) to each worker "
        "holding its task. Round overhead: cycle (opening to next opening) minus the slowest node's compute.",
        "",
        "| db | replicas | N | reps | delivery p50 | delivery p99 (< 100 ms) | round overhead (target) "
        "| hub CPU / round | workers CPU / round | hub peak RSS (≤ 1 GB) | failed requests | rounds completed "
        "| set-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        target = overhead_target_ms(r["nodes"])
        lines.append(
            f"| {r['db']} | {r.get('replicas', 1)} | {r['nodes']} | {r['repeats']} "
            f"| {r['delivery_p50_ms']:.0f} ms "
            f"| {r['delivery_p99_ms']:.0f} ms ({_ok(r['delivery_p99_ms'] < TARGETS['p99_ms'])}) "
            f"| {r['overhead_ms']:.0f} ms (≤ {target:.0f} ms: {_ok(r['overhead_ms'] <= target)}) "
            f"| {r['hub_cpu_ms_per_round']:.0f} ms | {r['workers_cpu_ms_per_round']:.0f} ms "
            f"| {r['hub_peak_rss_mb']:.0f} MiB ({_ok(r['hub_peak_rss_mb'] <= TARGETS['rss_mb'])}) "
            f"| {r['failed_requests']} ({_ok(r['failed_requests'] == 0)}) "
            f"| {r['rounds_completed']} of {r['rounds_planned']} | {r['setup_s']:.0f} s |")
    lines += _p99_by_round(result["results"])
    ratios = [r for r in result["results"] if "ratios" in r]
    if ratios:
        lines += ["", f"Ratios to N = {result['baseline']} on the same database in the same run "
                      "(delivery p50, p99, round overhead, hub peak RSS):", ""]
        for r in ratios:
            q = r["ratios"]
            lines.append(f"- {r['db']}, N = {r['nodes']}: {q['delivery_p50_ms']:.1f}x, {q['delivery_p99_ms']:.1f}x, "
                         f"{q['overhead_ms']:.1f}x, {q['hub_peak_rss_mb']:.2f}x")
    failures = [f for r in result["results"] for f in r["failures"]]
    if failures:
        lines += ["", "First failed requests:", ""] + [f"- `{f}`" for f in failures[:5]]
    return "\n".join(lines)
