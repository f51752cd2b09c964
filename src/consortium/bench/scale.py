"""`consortium bench scale`: one real hub process against N lightweight node workers (N = 100, 1,000).

Per database (SQLite file, PostgreSQL) and per N, a hub process (uvicorn) is started, N orgs are enrolled,
admitted and register a dataset, all of them approve one project (:mod:`consortium.bench.scale_setup`), and
N node workers in a few processes (:mod:`consortium.bench.scale_worker`: real HTTP, real Ed25519 request
signatures, real safetensors updates; only the training is a seeded stand-in) answer its runs. Each
repetition is one run of the project on the same hub. Measured:

- **task delivery latency**: from a fit phase's opening (``RoundMetrics.opened_at``, before its tasks are
  inserted) to each worker holding its task (the long poll's or the previous upload's answer parsed);
- **round overhead**: the cycle from one round's opening to the next one's minus the slowest node's compute,
  as in `bench deploy`;
- the hub's **peak resident memory** (``VmHWM``, set-up included), **failed requests** (any answer other than
  200/202/204, or a transport error) and the **rounds completed**.

A small N (``baseline``, default 10) runs first on each database: the figures of the larger N are also
given as ratios to it.

With ``replicas`` > 1 (PostgreSQL only) the hub is that many ``consortium hub --replica`` processes on one
database and blob store behind HAProxy (``launch.start_haproxy``); set-up and workers go through the proxy,
the hub CPU is the sum over the replicas and the peak RSS the largest replica's.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consortium.bench.affinity import pin
from consortium.bench.deploy import round_overheads_ms
from consortium.bench.pg_scratch import scratch_database
from consortium.bench.scale_setup import org_names, provision
from consortium.bench.replica_lab import start_replicas
from consortium.launch import HubProcess, Process, child_env, start_hub

PG_ADMIN_URL = os.environ.get("CONSORTIUM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
TARGETS = {"p99_ms": 100.0, "rss_mb": 1024.0}


def overhead_target_ms(nodes: int) -> float:
    """The issue's round-overhead target: 100 ms up to 100 nodes, 1 s at 1,000."""
    return 100.0 if nodes <= 100 else 1000.0


@dataclass(frozen=True)
class ScaleConfig:
    rounds: int = 5
    repeats: int = 3
    processes: int = 4
    """Worker processes the N node workers are spread over."""
    poll_wait: float = 25.0
    compute_ms: float = 0.0
    """Simulated local compute per task (an asyncio sleep: it takes no CPU)."""
    compute_spread_ms: float = 0.0
    """Plus a seeded uniform draw in [0, this) per task: nodes then finish one after another, as real ones do,
    instead of all at once (0: every node's update arrives in the same instant, the hub's worst case)."""
    hidden: int = 32
    round_timeout: float = 120.0
    seed_threads: int = 8
    replicas: int = 1
    """Hub replicas (``consortium hub --replica``, PostgreSQL only) behind HAProxy; 1: one plain hub."""
    lease_s: float = 10.0
    hub_cpus: tuple[int, ...] | None = None
    """The CPUs the hub processes (and HAProxy) may run on (:mod:`consortium.bench.affinity`); None: any."""
    worker_cpus: tuple[int, ...] | None = None
    """The CPUs the node workers may run on; None: any."""

    @property
    def suite(self) -> str:
        """The BENCHMARKS.md section this configuration writes: one per kind of hub and of node timing, so
        that the figures of each stay side by side."""
        return "scale" + ("-replicas" if self.replicas > 1 else "") + ("-spread" if self.compute_spread_ms else "")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@contextmanager
def database(kind: str, workdir: Path) -> Iterator[str | None]:
    """None (the hub's default SQLite file) or the URL of a fresh PostgreSQL database, dropped afterwards."""
    if kind == "sqlite":
        yield None
        return
    with scratch_database(PG_ADMIN_URL, "consortium_scale") as url:
        yield url


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident set size (``VmHWM``) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


@dataclass
class _Workers:
    procs: list[subprocess.Popen]
    outputs: list[Path]

    def stop(self) -> list[dict[str, Any]]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return [json.loads(p.read_text()) if p.exists() else {"deliveries": [], "requests": 0,
                                                               "failures": [f"worker wrote no {p.name}"]}
                for p in self.outputs]


def start_workers(hub: HubProcess, org_dirs: list[Path], workdir: Path, cfg: ScaleConfig) -> _Workers:
    """Spread the orgs over ``cfg.processes`` worker processes and wait until each runs its node loops."""
    count = max(1, min(cfg.processes, len(org_dirs)))
    procs, outputs = [], []
    for index in range(count):
        chunk = org_dirs[index::count]
        config = workdir / f"worker-{index}.json"
        config.write_text(json.dumps({"hub": hub.url, "org_dirs": [str(d) for d in chunk],
                                      "poll_wait": cfg.poll_wait, "compute_ms": cfg.compute_ms,
                                      "compute_spread_ms": cfg.compute_spread_ms,
                                      "ca_file": str(hub.ca_file) if hub.ca_file else None}))
        outputs.append(workdir / f"worker-{index}.out.json")
        log = open(workdir / f"worker-{index}.log", "wb")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "consortium.bench.scale_worker", str(config), str(outputs[-1])],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=child_env(), start_new_session=True))
    workers = _Workers(procs, outputs)
    if cfg.worker_cpus:
        for proc in procs:
            pin(proc.pid, cfg.worker_cpus)
    for proc in procs:
        line = proc.stdout.readline() if proc.stdout else b""
        if not line.startswith(b"ready"):
            workers.stop()
            raise RuntimeError(f"a scale worker did not start: {(workdir / 'worker-0.log').read_text()[-2000:]}")
    return workers


def wait_online(processes: list[HubProcess], orgs: list[str], timeout: float, within_s: float = 60.0
                ) -> None:
    """Until each org's node has called one of the hub processes in the last ``within_s`` seconds: each
    replica knows only the nodes its own requests came from (docs/deploy.md, "Not yet")."""
    deadline = time.monotonic() + timeout
    while True:
        seen: dict[str, float] = {}
        for process in processes:
            with process.client() as admin:
                for org in admin.orgs():
                    if org["last_seen_s_ago"] is not None:
                        seen[org["name"]] = min(seen.get(org["name"], within_s + 1), org["last_seen_s_ago"])
        offline = [o for o in orgs if seen.get(o, within_s + 1) > within_s]
        if not offline:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nodes not online after {timeout}s: {', '.join(offline)}")
        time.sleep(0.2)


def _run_once(hub: HubProcess, project_id: int, timeout: float) -> tuple[int, list[Any], str]:
    with hub.client() as admin:
        run = admin.start_run(project_id)
        deadline = time.monotonic() + timeout
        while (status := admin.run(run["id"]))["status"] == "running":
            if time.monotonic() > deadline:
                raise RuntimeError(f"scale run {run['id']} did not finish within {timeout:.0f} s")
            time.sleep(0.5)
        return run["id"], admin.progress(run["id"]).rounds, status["status"] + (
            f": {status['error']}" if status["error"] else "")


@contextmanager
def hubs(db_kind: str, workdir: Path, cfg: ScaleConfig) -> Iterator[tuple[HubProcess, list[HubProcess]]]:
    """The hub the bench talks to and its processes: one hub (both), or ``cfg.replicas`` replicas on one fresh
    PostgreSQL database behind HAProxy (the front is the first replica with the proxy's URL). Everything is
    stopped, and the database dropped, on exit."""
    if cfg.replicas > 1 and db_kind != "postgres":
        raise ValueError(f"{cfg.replicas} hub replicas need PostgreSQL, not {db_kind}")
    started: list[Process] = []
    with database(db_kind, workdir) as db_url:
        try:
            if cfg.replicas == 1:
                started.append(front := start_hub(workdir / "hub", db_url=db_url))
                processes = [front]
            else:
                processes, proxy, front = start_replicas(db_url, workdir, cfg.replicas, cfg.lease_s)
                started += [*processes, proxy]
            if cfg.hub_cpus:
                for proc in started:
                    pin(proc.popen.pid, cfg.hub_cpus)
            yield front, processes
        finally:
            for proc in reversed(started):
                proc.stop()


def _repeat_runs(hub: HubProcess, project_id: int, pids: dict[str, list[int]], db_kind: str, nodes: int,
                 cfg: ScaleConfig, report: Callable[[str], None]) -> list[dict[str, Any]]:
    """Run the project ``cfg.repeats`` times; per run its rows, status and CPU seconds of each pid group."""
    runs = []
    for index in range(cfg.repeats):
        before = {k: sum(map(cpu_seconds, v)) for k, v in pids.items()}
        run_id, rows, status = _run_once(hub, project_id, 60.0 + cfg.rounds * cfg.round_timeout)
        cpu = {k: sum(map(cpu_seconds, v)) - before[k] for k, v in pids.items()}
        runs.append({"run": run_id, "rows": rows, "status": status, "cpu_s": cpu})
        report(f"{db_kind}, {nodes} nodes: run {index + 1}/{cfg.repeats} {status}")
    return runs


def measure_size(nodes: int, db_kind: str, cfg: ScaleConfig, report: Callable[[str], None] = print) -> dict[str, Any]:
    """Set up a hub (or replicas) with ``nodes`` orgs on ``db_kind``, run the project ``cfg.repeats`` times,
    measure."""
    workdir = Path(tempfile.mkdtemp(prefix=f"consortium-scale-{nodes}-"))
    try:
        with hubs(db_kind, workdir, cfg) as (hub, hub_procs):
            hub_pids = [p.popen.pid for p in hub_procs]
            started = time.perf_counter()
            consortium = provision(hub, workdir, nodes, cfg.rounds, cfg.hidden, cfg.round_timeout, cfg.seed_threads)
            setup_s = time.perf_counter() - started
            report(f"{db_kind}, {nodes} nodes, {cfg.replicas} hub process(es): set up in {setup_s:.1f} s")
            workers = start_workers(hub, list(consortium.org_dirs.values()), workdir, cfg)
            try:
                wait_online(hub_procs, org_names(nodes), timeout=120.0)
                pids = {"hub": hub_pids, "workers": [p.pid for p in workers.procs]}
                runs = _repeat_runs(hub, consortium.project_id, pids, db_kind, nodes, cfg, report)
                rss = [peak_rss_mb(pid) for pid in hub_pids]
            finally:
                logs = workers.stop()
            return summarise(nodes, db_kind, cfg, runs, logs, rss, setup_s)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def summarise(nodes: int, db_kind: str, cfg: ScaleConfig, runs: list[dict[str, Any]], logs: list[dict[str, Any]],
              rss_mb: list[float], setup_s: float) -> dict[str, Any]:
    """Per repetition: delivery latency p50/p99 and median round overhead; then their medians over repetitions
    (``rss_mb``: each hub process's peak; the result's ``hub_peak_rss_mb`` is their max)."""
    deliveries = [d for log in logs for d in log["deliveries"]]
    failures = [f for log in logs for f in log["failures"]]
    reps = []
    for run in runs:
        opened = {row.round: row.opened_at for row in run["rows"]}
        fits = [d for d in deliveries if d["run"] == run["run"] and d["kind"] == "fit" and d["round"] in opened]
        by_round = {number: [d for d in fits if d["round"] == number] for number in opened}

        def latency_ms(delivery: dict[str, Any]) -> float:
            return 1000.0 * (delivery["received"] - opened[delivery["round"]])

        latencies = [latency_ms(d) for d in fits]
        overheads = round_overheads_ms(run["rows"])
        reps.append({
            "run": run["run"], "status": run["status"], "rounds_completed": len(run["rows"]),
            "deliveries": len(latencies),
            "delivery_p50_ms": percentile(latencies, 0.5), "delivery_p99_ms": percentile(latencies, 0.99),
            "delivery_max_ms": max(latencies, default=float("nan")),
            "delivery_p99_ms_by_round": {number: percentile([latency_ms(d) for d in round_fits], 0.99)
                                         for number, round_fits in by_round.items()},
            "delivery_bytes_by_round": {number: statistics.median([d["bytes"] for d in round_fits] or [0])
                                        for number, round_fits in by_round.items()},
            "overhead_ms": statistics.median(overheads) if overheads else float("nan"),
            "hub_cpu_ms_per_round": 1000 * run["cpu_s"]["hub"] / max(1, len(run["rows"])),
            "workers_cpu_ms_per_round": 1000 * run["cpu_s"]["workers"] / max(1, len(run["rows"])),
            "overhead_max_ms": max(overheads, default=float("nan")),
            "cycle_ms": statistics.median(1000 * (b.opened_at - a.opened_at)
                                          for a, b in zip(run["rows"], run["rows"][1:])) if len(run["rows"]) > 1
            else float("nan"),
        })

    def med(key: str) -> float:
        return statistics.median(r[key] for r in reps)

    return {
        "nodes": nodes, "db": db_kind, "replicas": cfg.replicas, "rounds": cfg.rounds, "repeats": len(reps),
        "setup_s": setup_s,
        "delivery_p50_ms": med("delivery_p50_ms"), "delivery_p99_ms": med("delivery_p99_ms"),
        "overhead_ms": med("overhead_ms"), "cycle_ms": med("cycle_ms"),
        "hub_cpu_ms_per_round": med("hub_cpu_ms_per_round"), "workers_cpu_ms_per_round": med("workers_cpu_ms_per_round"),
        "hub_peak_rss_mb": max(rss_mb), "hub_peak_rss_mb_each": rss_mb,
        "failed_requests": len(failures), "failures": failures[:20],
        "requests": sum(log["requests"] for log in logs),
        "rounds_completed": sum(r["rounds_completed"] for r in reps if r["status"] == "completed"),
        "rounds_planned": cfg.rounds * len(reps),
        "per_repetition": reps,
    }


def run_scale_bench(nodes: list[int], dbs: list[str], cfg: ScaleConfig, baseline: int | None = 10,
                    report: Callable[[str], None] = print) -> dict[str, Any]:
    """Every size on every database (the ``baseline`` size first on each), results with ratios to it."""
    results = []
    for db_kind in dbs:
        sizes = ([baseline] if baseline and baseline not in nodes else []) + list(nodes)
        base = None
        for size in sizes:
            result = measure_size(size, db_kind, cfg, report)
            if size == baseline:
                base = result
            elif base is not None:
                result["ratios"] = {key: result[key] / base[key] if base[key] else float("nan")
                                    for key in ("delivery_p50_ms", "delivery_p99_ms", "overhead_ms",
                                                "hub_peak_rss_mb")}
            results.append(result)
    return {"suite": "scale", "baseline": baseline, "config": cfg.__dict__, "results": results}
