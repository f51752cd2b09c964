"""`consortium bench faults`: SIGKILL the hub at random moments of a 3-node run, restart it on the same
database and blob store, and check that every run completes with the params of an uninterrupted run of the
same seed, the ledger verifies, no blob is orphaned or half-written and no round is left open; then the other
faults of :mod:`consortium.bench.fault_scenarios` (PostgreSQL restarted mid-run, nodes killed in each phase,
connections cut and delayed by a proxy, the blob store's disk full).

Each hub kill is drawn from a seeded generator: either a named kill point of :mod:`consortium.faults`
(``CONSORTIUM_KILL_AT``, armed in the running hub just before the run starts: the phase opening, an upload staged or
committed, the checkpoint's blob write and its temporary file, the round's close, a ledger write, a database
commit) passed the N-th time, or a plain SIGKILL from outside after a random delay into the run.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console

from consortium.bench import faultcheck
from consortium.bench.faultlab import Lab, params_trail, wait_ended


def kill_points(rounds: int) -> dict[str, int]:
    """Each kill point a hub passes during a run of ``rounds`` rounds, with how many times it passes it at
    least (so that a drawn N is reached before the run ends)."""
    return {"phase.open": rounds + 1, "round.close": rounds + 1, "ledger.record": rounds,
            "upload.staged": 3 * rounds, "upload.committed": 3 * rounds, "blob.persist": rounds,
            "file.written": rounds, "commit.before": 3 * rounds, "commit": 3 * rounds}


def draw_fault(rng: random.Random, rounds: int, run_s: float) -> str:
    """``"POINT:N"`` or ``"timed:SECONDS"`` (a kill from outside that long after the run started)."""
    points = kill_points(rounds)
    name = rng.choice([*sorted(points), "timed", "timed"])
    if name == "timed":
        return f"timed:{rng.uniform(0.02, 0.6) * run_s:.3f}"
    return f"{name}:{rng.randint(1, points[name])}"



@dataclass
class TrialOutcome:
    """What one interrupted run showed: the kill fired, the run completed with the uninterrupted run's params,
    the rounds it abandoned, the time to recover and any problem the checks found."""

    fired: bool = False
    completed: bool = False
    same_params: bool = False
    abandoned_rounds: int = 0
    recovery_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.fired and self.completed and self.same_params and not self.problems


@dataclass(kw_only=True)
class KillTrial(TrialOutcome):
    index: int
    fault: str


def reference_run(lab: Lab, rounds: int, seed: int = 11, name: str = "faults-reference") -> tuple[list[str], float]:
    """An uninterrupted run of spec seed ``seed``: its params trail and how long it took."""
    project = lab.project(lab.spec(name, rounds, seed=seed))
    with lab.admin() as admin:
        started = time.monotonic()
        run_id = admin.start_run(project["id"])["id"]
    progress = wait_ended(lab, run_id)
    if progress.run.status != "completed":
        raise RuntimeError(f"the reference run failed: {progress.run.error}\n{lab.logs()}")
    return params_trail(progress), time.monotonic() - started


def _fire(lab: Lab, run_id: int, fault: str, timeout: float = 120.0) -> bool:
    """Wait for the armed hub to kill itself, or kill it after the drawn delay; False when the run ended
    first (the fault missed)."""
    name, _, value = fault.partition(":")
    deadline = time.monotonic() + (float(value) if name == "timed" else timeout)
    while time.monotonic() < deadline and lab.hub.alive():
        time.sleep(0.02 if name == "timed" else 0.1)
        if name != "timed":
            with lab.admin() as admin:
                try:
                    if admin.run(run_id)["status"] != "running":
                        return not lab.hub.alive()
                except Exception:
                    break  # the hub died under the request
    try:
        with lab.admin() as admin:
            running = admin.run(run_id)["status"] == "running"
    except Exception:  # the hub died just now
        running = True
    lab.hub.kill()
    return running


def hub_kill_trial(lab: Lab, index: int, fault: str, rounds: int) -> KillTrial:
    """One run of ``rounds`` rounds (spec seed ``index``) with the hub killed at ``fault``, the hub restarted,
    the run finished and checked, then compared with an uninterrupted run of the same seed made after it (so
    that the interrupted run is the one that writes its params blobs first)."""
    trial = KillTrial(index=index, fault=fault)
    project = lab.project(lab.spec(f"faults-{index}", rounds, seed=index))
    if not fault.startswith("timed:"):
        lab.arm(fault)
    try:
        with lab.admin() as admin:
            run_id = admin.start_run(project["id"])["id"]
    except Exception:  # the point fired while the run started: did its transaction commit?
        killed = time.monotonic()
        lab.restart_hub()
        started = faultcheck.project_runs(faultcheck.hub_db_url(lab.hub.data_dir, lab.db_url), project["id"])
        if not started:
            return trial  # no run: a miss
        run_id, trial.fired = started[0], True
    else:
        trial.fired = _fire(lab, run_id, fault)
        killed = time.monotonic()
        lab.restart_hub()
    progress = wait_ended(lab, run_id)
    trial.recovery_s = time.monotonic() - killed
    trial.completed = progress.run.status == "completed"
    if not trial.completed:
        trial.problems.append(f"run {run_id} {progress.run.status}: {progress.run.error}")
    trail = params_trail(progress)
    reference = reference_run(lab, rounds, seed=index, name=f"faults-{index}-uninterrupted")[0]
    trial.same_params = trail == reference
    if trial.completed and not trial.same_params:
        trial.problems.append(f"params differ from the uninterrupted run: {trail} vs {reference}")
    findings, rounds_by_status = lab.check(run_id)
    trial.problems += findings.problems
    trial.abandoned_rounds = rounds_by_status.get("abandoned", 0)
    if trial.abandoned_rounds > 2:
        trial.problems.append(f"{trial.abandoned_rounds} rounds abandoned for one kill")
    return trial


def run_hub_kills(lab: Lab, kills: int, seed: int, rounds: int, console: Console | None = None,
                  budget_s: float | None = None) -> dict[str, Any]:
    """``kills`` hub kills (one per run; a fault that missed its run is drawn again, at most ``kills`` more
    times; no new one after ``budget_s`` seconds); the figures for BENCHMARKS.md."""
    console = console or Console()
    rng = random.Random(seed)
    started = time.monotonic()
    run_s = reference_run(lab, rounds)[1]
    console.print(f"an uninterrupted run: {rounds} rounds in {run_s:.2f} s")
    trials: list[KillTrial] = []
    attempts = 0
    while (sum(t.fired for t in trials) < kills and attempts < 2 * kills
           and (budget_s is None or time.monotonic() - started < budget_s)):
        attempts += 1
        trial = hub_kill_trial(lab, attempts, draw_fault(rng, rounds, run_s), rounds)
        trials.append(trial)
        verdict = "ok" if trial.ok else ("missed" if not trial.fired else "FAILED: " + "; ".join(trial.problems))
        console.print(f"kill {sum(t.fired for t in trials)}/{kills} at {trial.fault}: {verdict} "
                      f"(abandoned {trial.abandoned_rounds}, recovered in {trial.recovery_s:.1f} s)", markup=False)
    fired = [t for t in trials if t.fired]
    by_point: dict[str, Counter] = defaultdict(Counter)
    for t in fired:
        point = t.fault.partition(":")[0]
        by_point[point]["kills"] += 1
        by_point[point]["ok"] += t.ok
    return {
        "kills": len(fired), "asked": kills, "missed": len(trials) - len(fired), "rounds": rounds, "seed": seed,
        "budget_s": budget_s,
        "completed": sum(t.completed for t in fired), "same_params": sum(t.same_params for t in fired),
        "all_checks": sum(t.ok for t in fired),
        "abandoned_rounds": dict(Counter(t.abandoned_rounds for t in fired)),
        "median_recovery_s": statistics.median(t.recovery_s for t in fired) if fired else None,
        "reference_run_s": run_s, "seconds": time.monotonic() - started,
        "by_point": {k: dict(v) for k, v in sorted(by_point.items())},
        "trials": [asdict(t) for t in trials],
    }


def kills_markdown(result: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    """The hub-kill section of BENCHMARKS.md."""
    m = machine
    db = result.get("database", "SQLite")
    lines = [
        f"Command: `{command}`",
        f"Machine: {m['cpu']} ({m['cores']} cores, shared with other engineers' test runs while measured), "
        f"{m['python']}, torch {m['torch']}; {db}; measured {m['date']}.",
        "",
        f"A hub and 3 node processes on loopback, digits MLP, {result['rounds']} rounds per run, min_nodes 3; one "
        "SIGKILL of the hub per run, at a kill point drawn from a seeded generator (seed "
        f"{result['seed']}) or from outside after a random delay, then the hub restarted on the same database "
        "and blob store. Run k has spec seed k and is compared with an uninterrupted run of seed k made right "
        "after it (every round's params digest); the ledger is verified from the database, the blob store has no orphan, corrupt or "
        "half-written file, and the run has no open round or task.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| hub kills (runs interrupted) | **{result['kills']}** of {result['asked']} asked"
        + (f" (stopped at the {result['budget_s'] / 60:.0f}-minute budget)" if result['kills'] < result['asked']
           and result.get('budget_s') else "")
        + f"; {result['missed']} drawn faults missed their run and were drawn again |",
        f"| runs completed | **{result['completed']}/{result['kills']}** |",
        f"| same params as the uninterrupted run, every round | **{result['same_params']}/{result['kills']}** |",
        f"| every check held (ledger, blobs, rounds) | **{result['all_checks']}/{result['kills']}** |",
        f"| rounds abandoned per kill (count of runs) | "
        f"{', '.join(f'{k}: {v}' for k, v in sorted(result['abandoned_rounds'].items()))} |",
        f"| median time from the kill to the run completed (hub restart included) | "
        f"{result['median_recovery_s']:.1f} s |",
        f"| an uninterrupted run | {result['reference_run_s']:.2f} s |",
        f"| whole bench | {result['seconds'] / 60:.1f} min |",
        "",
        "| kill point | kills | all checks held |",
        "|---|---|---|",
    ]
    lines += [f"| `{point}` | {v.get('kills', 0)} | {v.get('ok', 0)} |" for point, v in result["by_point"].items()]
    return "\n".join(lines)
