"""`consortium bench privacy`: what client-level DP costs the digits classifier, and what the audit measures.

**Accuracy cost.** The spec (``examples/classifier-digits.json`` by default) runs in the simulator's vectorised
engine on the CPU, one torch thread, at each target epsilon with a ``privacy`` block (DP-FedAvg, the spec's
own block if it has one, else central noise, clip 1, delta 1e-5; the noise multiplier is derived from epsilon
by the accountant for the run's rounds and cohort) and without DP, for each N and seed (the spec's seed
``k`` for repetition ``k``: initial weights, shuffles, noise). Reported per (N, epsilon): final test accuracy
(median and range over seeds) and steady seconds per round (median of rounds 2..R, then over seeds; the
round includes the test evaluation), and the time ratio "with DP / without DP" at the same N.

**Audit** (``--audit``): the one-run DP audit (:mod:`consortium.sim.dp_audit`) of the same spec at each audit
epsilon and without DP, for several seeds: epsilon claimed against the 95 % lower bound, per seed.

Everything runs in this process; *other load* is the CPU the rest of the machine used meanwhile, in cores.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from consortium.bench.proctree import machine_busy_s
from consortium.sim.dp_audit import DpAuditReport, run_dp_audit
from consortium.sim.engines.factory import make_engine
from consortium.sim.simulation import Simulation
from consortium.sim.spec import parse_spec

DEFAULT_PRIVACY = {"noise": "central", "clip": 1.0, "delta": 1e-5, "sampling": "poisson"}
"""The DP settings when the spec has no privacy block (the target epsilon is the bench's)."""

Epsilon = float | None
"""A target epsilon; None runs without DP."""


def with_epsilon(raw: dict[str, Any], epsilon: Epsilon) -> dict[str, Any]:
    """The spec dict with a privacy block targeting ``epsilon`` (its own block's other settings kept), or
    with none for ``epsilon = None``."""
    base = {k: v for k, v in raw.items() if k != "privacy"}
    if epsilon is None:
        return base
    block = {**DEFAULT_PRIVACY, **(raw.get("privacy") or {}), "epsilon": epsilon}
    block.pop("noise_multiplier", None)
    return base | {"privacy": block}


class _LoadMeter:
    """CPU cores the rest of the machine kept busy between start and :meth:`cores`."""

    def __init__(self) -> None:
        self.wall, self.own, self.busy = time.perf_counter(), time.process_time(), machine_busy_s()

    def cores(self) -> float:
        wall = time.perf_counter() - self.wall
        other = machine_busy_s() - self.busy - (time.process_time() - self.own)
        return max(other, 0.0) / wall if wall > 0 else 0.0


@dataclass(frozen=True)
class AccuracyRun:
    clients: int
    epsilon: Epsilon
    seed: int
    noise_multiplier: float
    final_acc: float
    steady_s_per_round: float
    other_cores: float


def run_accuracy(raw: dict[str, Any], clients: int, epsilon: Epsilon, seed: int,
                 rounds: int | None) -> AccuracyRun:
    """One simulated run of the spec dict on the vectorised CPU engine."""
    spec = with_epsilon(raw, epsilon) | {"seed": seed}
    if rounds is not None:
        spec["rounds"] = rounds
    project, settings = parse_spec(spec, {"clients": clients, "engine": "vectorized", "device": "cpu"})
    meter = _LoadMeter()
    simulation = Simulation(project, settings)
    engine = make_engine(settings.engine, simulation.setup, settings)
    try:
        result = simulation.run(engine)
    finally:
        engine.close()
    walls = [r.wall_s for r in result.rounds]
    plan = simulation.plan.privacy
    return AccuracyRun(clients, epsilon, seed, plan.noise_multiplier if plan else 0.0,
                       result.final_metrics["accuracy"], statistics.median(walls[1:] or walls), meter.cores())


@dataclass(frozen=True)
class AuditRun:
    epsilon: Epsilon
    seed: int
    report: DpAuditReport

    def as_dict(self) -> dict[str, Any]:
        data = {"epsilon": self.epsilon, "seed": self.seed, **self.report.as_dict()}
        return {k: None if isinstance(v, float) and math.isinf(v) else v for k, v in data.items()}


def run_audit(raw: dict[str, Any], clients: int, epsilon: Epsilon, seed: int, rounds: int | None,
              canaries: int, guesses: int) -> AuditRun:
    """The one-run audit of the spec dict at ``epsilon`` (None: without DP, clipped only)."""
    spec = with_epsilon(raw, epsilon)
    clip = None if epsilon is not None else {**DEFAULT_PRIVACY, **(raw.get("privacy") or {})}["clip"]
    with tempfile.TemporaryDirectory(prefix="consortium-bench-privacy-") as tmp:
        path = Path(tmp) / "spec.json"
        path.write_text(json.dumps(spec))
        report = run_dp_audit(path, canaries, guesses, noise_multiplier=0.0 if epsilon is None else None,
                              clip=clip, rounds=rounds,
                              seed=seed, overrides={"clients": clients, "engine": "vectorized", "device": "cpu"})
    return AuditRun(epsilon, seed, report)


@dataclass(frozen=True)
class BenchConfig:
    clients: Sequence[int] = (10, 1000)
    epsilons: Sequence[float] = (1.0, 4.0, 8.0)
    seeds: int = 3
    rounds: int | None = None
    audit: bool = False
    audit_epsilons: Sequence[float] = (1.0, 2.0, 4.0)
    audit_seeds: int = 5
    audit_clients: int = 10
    audit_rounds: int | None = None
    canaries: int = 1000
    guesses: int = 100


def run_privacy_bench(spec_path: Path, config: BenchConfig,
                      progress: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Every accuracy run (seeds interleaved across configurations) and, with ``config.audit``, every audit."""
    raw = json.loads(Path(spec_path).read_text())
    started = time.perf_counter()
    runs: list[AccuracyRun] = []
    epsilons: list[Epsilon] = [None, *config.epsilons]
    for seed in range(config.seeds):
        for clients in config.clients:
            for epsilon in epsilons:
                progress(f"seed {seed}: N={clients} epsilon={epsilon or 'no DP'}")
                runs.append(run_accuracy(raw, clients, epsilon, seed, config.rounds))
    accuracy_s = time.perf_counter() - started
    audits: list[AuditRun] = []
    if config.audit:
        for epsilon in [None, *config.audit_epsilons]:
            for seed in range(config.audit_seeds):
                progress(f"audit epsilon={epsilon or 'no DP'} seed {seed}")
                audits.append(run_audit(raw, config.audit_clients, epsilon, seed, config.audit_rounds,
                                        config.canaries, config.guesses))
    return {"suite": "privacy", "spec": str(spec_path), "spec_name": raw.get("name"),
            "rounds": config.rounds or raw.get("rounds"), "config": asdict(config),
            "records": summarise(runs), "runs": [asdict(r) for r in runs], "accuracy_s": accuracy_s,
            "audits": [a.as_dict() for a in audits], "audit_s": time.perf_counter() - started - accuracy_s}


def summarise(runs: Sequence[AccuracyRun]) -> list[dict[str, Any]]:
    """One record per (N, epsilon): medians over seeds, and the time ratio to no DP at the same N."""
    keys = list(dict.fromkeys((r.clients, r.epsilon) for r in runs))
    records = []
    for clients, epsilon in keys:
        group = [r for r in runs if (r.clients, r.epsilon) == (clients, epsilon)]
        records.append({
            "clients": clients, "epsilon": epsilon,
            "noise_multiplier": group[0].noise_multiplier,
            "final_acc": statistics.median(r.final_acc for r in group),
            "acc_range": [min(r.final_acc for r in group), max(r.final_acc for r in group)],
            "steady_s_per_round": statistics.median(r.steady_s_per_round for r in group),
            "per_seed_s_per_round": [r.steady_s_per_round for r in group],
            "other_cores": statistics.median(r.other_cores for r in group),
        })
    plain = {r["clients"]: r["steady_s_per_round"] for r in records if r["epsilon"] is None}
    for record in records:
        base = plain.get(record["clients"])
        record["time_vs_no_dp"] = record["steady_s_per_round"] / base if base else None
    return records


def _eps(epsilon: Epsilon) -> str:
    return "no DP" if epsilon is None else f"{epsilon:g}"


def _claimed(value: float | None) -> str:
    return "none (no DP)" if value is None else f"{value:.3f}"


def report_markdown(result: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    """The bench:privacy section of BENCHMARKS.md."""
    records, audits, config = result["records"], result["audits"], result["config"]
    load = statistics.median(r["other_cores"] for r in records) if records else 0.0
    lines = [
        f"Measured by `{command}` on {machine['cpu']}, {machine['cores']} cores, {machine['python']}, torch "
        f"{machine['torch']} (1 thread), {machine['date']}; other load while it ran: {load:.2f} cores (median "
        "over runs; above 0 the machine was shared and every time is inflated).",
        "",
        f"Spec `{result['spec']}` ({result['spec_name']}), {result['rounds']} rounds, vectorised engine on the CPU; "
        "each epsilon adds a privacy block (DP-FedAvg; the spec's own block's settings, else central noise, clip 1, "
        "delta 1e-5), sigma derived by the accountant for the run; seeds 0.."
        f"{config['seeds'] - 1} (initial weights, shuffles, noise). Final test accuracy: median (min-max) over "
        "seeds; steady s/round: median of rounds 2..R (test evaluation included), median over seeds; *DP / no DP*: "
        "that time over the same N's without DP (issue 13's target: at most 3x).",
        "",
        "| N | epsilon | sigma | final acc (min-max) | steady s/round | per seed | DP / no DP | other load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        per_seed = ", ".join(f"{v:.4f}" for v in r["per_seed_s_per_round"])
        ratio = "" if r["time_vs_no_dp"] is None else f"{r['time_vs_no_dp']:.2f}x"
        lines.append(
            f"| {r['clients']} | {_eps(r['epsilon'])} | {r['noise_multiplier']:.3g} | {r['final_acc']:.4f} "
            f"({r['acc_range'][0]:.4f}-{r['acc_range'][1]:.4f}) | {r['steady_s_per_round']:.4f} | {per_seed} | "
            f"{ratio} | {r['other_cores']:.2f} |")
    ratios = [r["time_vs_no_dp"] for r in records if r["epsilon"] is not None and r["time_vs_no_dp"]]
    if ratios:
        lines += ["", f"Largest DP / no DP time ratio: {max(ratios):.2f}x "
                      f"({'within' if max(ratios) <= 3 else 'above'} the 3x target). The accuracy runs took "
                      f"{result['accuracy_s']:.0f} s" + (f", the audits {result['audit_s']:.0f} s." if audits else ".")]
    if audits:
        lines += _audit_lines(audits, config)
    return "\n".join(lines)


def _audit_lines(audits: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"One-run DP audit (`consortium audit dp`, Steinke, Nasr and Jagielski 2023) of the same spec at N = "
        f"{config['audit_clients']}, m = {config['canaries']} canaries, k = {config['guesses']} guesses per side, "
        "95 % confidence, the engines' own DP with canaries added by the audit's hook; without DP the deltas are "
        "clipped to the same C and no noise is added:",
        "",
        "| epsilon target | seed | sigma | epsilon claimed | epsilon lower | correct / guesses |",
        "|---|---|---|---|---|---|",
    ]
    for a in audits:
        lines.append(f"| {_eps(a['epsilon'])} | {a['seed']} | {a['noise_multiplier']:.3g} | "
                     f"{_claimed(a['epsilon_claimed'])} | {a['epsilon_lower']:.3f} | {a['correct']} / {a['guesses']} |")
    with_dp = [a for a in audits if a["epsilon"] is not None]
    without = [a for a in audits if a["epsilon"] is None]
    above = [a for a in with_dp if a["epsilon_claimed"] is not None and a["epsilon_lower"] > a["epsilon_claimed"]]
    lines += [""]
    if with_dp:
        lines.append(f"- With DP: epsilon lower above epsilon claimed in {len(above)} of {len(with_dp)} runs.")
    if without:
        lines.append(f"- Without DP: epsilon lower {min(a['epsilon_lower'] for a in without):.3f} at the least "
                     f"(the audit has power when it is at least 1).")
    return lines
