"""`consortium bench sim`: the simulator's engines against Flower and centralized training, in one run.

Every configuration (engine x N, Flower x N, the centralized epoch) runs in its own process, measured by
:mod:`consortium.bench.proctree` (peak RSS/PSS of the whole process tree); the peers and the workload they share
with our engines are in :mod:`consortium.bench.peers`. Repetitions are interleaved so that noise on this
shared machine spreads evenly. Reported per configuration: steady seconds per round (the median of rounds
2..R within a repetition, then the median over repetitions), peak tree RSS/PSS (median over repetitions),
final test accuracy, and the ratios to Flower (Flower's s/round / ours) and to the centralized epoch
(ours / centralized).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from consortium.bench.proctree import run_measured
from consortium.bench.report import machine_info, update_benchmarks_md

PEERS = Path(__file__).resolve().parent / "peers"
"""The reference workload and the peer runners (scripts that need no ``consortium``)."""


@dataclass(frozen=True)
class Config:
    runner: str
    clients: int

    @property
    def label(self) -> str:
        return f"{self.runner} N={self.clients}" if self.runner != "centralized" else "centralized epoch"


def _command(
    config: Config, rounds: int, out: Path, flower_python: str | None, ray_actors: int, seed: int
) -> list[str]:
    if config.runner == "centralized":
        return [sys.executable, str(PEERS / "centralized.py"), "--rounds", str(rounds), "--out", str(out)]
    if config.runner == "flower":
        return [
            str(flower_python),
            str(PEERS / "flower_runner.py"),
            "--clients",
            str(config.clients),
            "--rounds",
            str(rounds),
            "--cpus-per-client",
            "1",
            "--out",
            str(out),
        ]
    return [
        sys.executable,
        "-m",
        "consortium.bench.sim_worker",
        "--engine",
        config.runner,
        "--clients",
        str(config.clients),
        "--rounds",
        str(rounds),
        "--ray-actors",
        str(ray_actors),
        "--seed",
        str(seed),
        "--out",
        str(out),
    ]


def _run_one(
    config: Config, rounds: int, flower_python: str | None, ray_actors: int, timeout_s: float, seed: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="consortium-bench-sim-") as tmp:
        out = Path(tmp) / "result.json"
        env = os.environ | {
            "ANCHOR_TORCH_THREADS": "1",
            "CONSORTIUM_TORCH_THREADS": "1",
            "FLWR_TELEMETRY_ENABLED": "0",
            "RAY_DEDUP_LOGS": "0",
        }
        measured = run_measured(_command(config, rounds, out, flower_python, ray_actors, seed), env, timeout_s)
        if measured.returncode != 0 or not out.exists():
            raise RuntimeError(f"{config.label} failed (exit {measured.returncode}):\n{measured.output_tail}")
        return json.loads(out.read_text()) | {"mem": measured.mem}


def steady_s_per_round(result: dict[str, Any]) -> float:
    """Median of rounds 2..R of one repetition."""
    rounds = result["round_s"][1:] or result["round_s"]
    return statistics.median(rounds)


def run_sim_bench(
    clients: list[int],
    engines: list[str],
    repeats: int = 3,
    rounds: int = 10,
    flower_python: str | None = None,
    ray_actors: int = 2,
    json_path: Path | None = None,
    markdown_path: Path | None = None,
    console: Console | None = None,
    timeout_s: float = 1800,
) -> list[dict[str, Any]]:
    """Run every configuration ``repeats`` times and return one record per (runner, N)."""
    console = console or Console()
    if flower_python is not None and not Path(flower_python).exists():
        raise FileNotFoundError(f"--flower-python: {flower_python} does not exist")
    configs = [Config("centralized", 1)]
    for n in clients:
        configs += [Config(engine, n) for engine in engines]
        if flower_python:
            configs.append(Config("flower", n))
    raw: dict[Config, list[dict[str, Any]]] = {c: [] for c in configs}
    for rep in range(repeats):
        for config in configs:
            console.print(f"repetition {rep + 1}/{repeats}: {config.label}")
            raw[config].append(_run_one(config, rounds, flower_python, ray_actors, timeout_s, rep))
    records = _records(raw)
    _print_table(records, console)
    if json_path is not None:
        Path(json_path).write_text(
            json.dumps(
                {
                    "suite": "sim",
                    "rounds": rounds,
                    "repeats": repeats,
                    "machine": machine_info(),
                    "records": records,
                },
                indent=2,
            )
            + "\n"
        )
    if markdown_path is not None:
        update_benchmarks_md(
            Path(markdown_path),
            "sim",
            _markdown(records, clients, engines, repeats, rounds, flower_python is not None),
        )
    return records


def _records(raw: dict[Config, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    summary: dict[Config, dict[str, Any]] = {}
    for config, reps in raw.items():
        summary[config] = {
            "engine": config.runner,
            "clients": config.clients,
            "steady_s_per_round": statistics.median(steady_s_per_round(r) for r in reps),
            "per_repetition_s_per_round": [steady_s_per_round(r) for r in reps],
            "peak_rss_mb": statistics.median(r["mem"]["peak_tree_rss_mb"] for r in reps),
            "peak_pss_mb": statistics.median(r["mem"]["peak_tree_pss_mb"] for r in reps),
            "final_acc": statistics.median(r["final_test_acc"] for r in reps),
            "per_repetition_acc": [r["final_test_acc"] for r in reps],
            "contention_cores": statistics.median(r["mem"].get("other_avg_cores", 0.0) for r in reps),
        }
    central = next(s for c, s in summary.items() if c.runner == "centralized")["steady_s_per_round"]
    flower = {c.clients: s["steady_s_per_round"] for c, s in summary.items() if c.runner == "flower"}
    records = []
    for record in summary.values():
        record["ratio_vs_centralized"] = record["steady_s_per_round"] / central
        peer = flower.get(record["clients"]) if record["engine"] not in ("flower", "centralized") else None
        record["ratio_vs_flower"] = peer / record["steady_s_per_round"] if peer else None
        records.append(record)
    return records


def _fmt_ratio(value: float | None, suffix: str = "x") -> str:
    return "" if value is None else f"{value:.1f}{suffix}" if value >= 10 else f"{value:.2f}{suffix}"


def _print_table(records: list[dict[str, Any]], console: Console) -> None:
    table = Table(
        "runner",
        "N",
        "steady s/round",
        "peak RSS MB",
        "peak PSS MB",
        "final acc",
        "Flower / ours",
        "ours / centralized",
    )
    for r in records:
        table.add_row(
            r["engine"],
            str(r["clients"]),
            f"{r['steady_s_per_round']:.4f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['peak_pss_mb']:.0f}",
            f"{r['final_acc']:.4f}",
            _fmt_ratio(r["ratio_vs_flower"]),
            _fmt_ratio(r["ratio_vs_centralized"]),
        )
    console.print(table)


def _markdown(
    records: list[dict[str, Any]],
    clients: list[int],
    engines: list[str],
    repeats: int,
    rounds: int,
    with_flower: bool,
) -> str:
    m = machine_info()
    flower_flag = " --flower-python /tmp/venv-flower/bin/python" if with_flower else ""
    lines = [
        f"Command: `consortium bench sim --clients {','.join(map(str, clients))} --engines {','.join(engines)} "
        f"--repeats {repeats} --rounds {rounds}{flower_flag} --markdown BENCHMARKS.md`",
        f"Machine: {m['cpu']} ({m['cores']} cores), {m['python']}, torch {m['torch']}, 1 torch thread per process; "
        f"measured {m['date']}. Workload: `consortium/bench/peers/workload.py` (digits, MLP 64-128-10, Dirichlet 0.5 "
        f"seed 42, batch 32, lr 0.05, 1 local epoch, FedAvg over all N clients, test evaluation every round).",
        "",
        "Steady s/round = median of rounds 2..10 in each repetition, median over repetitions; memory = peak of the "
        "whole process tree (`consortium/bench/proctree.py`), median over repetitions. *Flower / ours* is how many times faster "
        "than Flower in the same run; *ours / centralized* is the round time over one centralized epoch on the "
        "same samples. Our engines take the workload's partition and initial weights; repetition k runs with "
        "spec seed k, which sets the clients' local shuffles (the peers' shuffles are fixed by the workload), "
        "so *final acc* is the median over those shuffles and its range shows how much the shuffle alone moves it.",
        "",
        "*other load* is how many cores other processes of the machine kept busy while the configuration ran "
        "(median over repetitions): above 0 the machine was shared and every time in that row is inflated.",
        "",
        "| runner | N | steady s/round | per repetition | peak RSS MB | peak PSS MB | final acc (per repetition) "
        "| Flower / ours | ours / centralized | other load (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        reps = ", ".join(f"{v:.4f}" for v in r["per_repetition_s_per_round"])
        accs = ", ".join(f"{v:.4f}" for v in r["per_repetition_acc"])
        lines.append(
            f"| {r['engine']} | {r['clients']} | {r['steady_s_per_round']:.4f} | {reps} | {r['peak_rss_mb']:.0f} | "
            f"{r['peak_pss_mb']:.0f} | {r['final_acc']:.4f} ({accs}) | {_fmt_ratio(r['ratio_vs_flower'])} | "
            f"{_fmt_ratio(r['ratio_vs_centralized'])} | {r['contention_cores']:.2f} |"
        )
    lines += ["", *_accuracy_lines(records)]
    return "\n".join(lines)


def _accuracy_lines(records: list[dict[str, Any]]) -> list[str]:
    """Each engine's median final accuracy against Flower's at the same N, in points."""
    flower = {r["clients"]: r["final_acc"] for r in records if r["engine"] == "flower"}
    lines = []
    for r in records:
        if r["engine"] in ("flower", "centralized") or r["clients"] not in flower:
            continue
        gap = 100 * (r["final_acc"] - flower[r["clients"]])
        lines.append(
            f"- {r['engine']} N={r['clients']}: final accuracy {r['final_acc']:.4f} vs Flower's "
            f"{flower[r['clients']]:.4f} ({gap:+.1f} points)"
        )
    return lines
