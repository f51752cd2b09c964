"""`consortium bench faults --replica-kills K`: two hub replicas behind HAProxy on a scratch PostgreSQL
database (:mod:`consortium.bench.replica_lab`), three nodes talking to the proxy; one uninterrupted run, then K
runs of the same spec seed, each with the replica that drives it (holds its lease) SIGKILLed after a round and a
delay drawn from a seeded generator. The other replica takes the lease over once it expires, the killed one is
restarted on its port, and each run is checked: completed, the uninterrupted run's params round by round, the
ledger verifies, no orphan or half-written blob, no open round or task, no update blob left."""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from consortium.bench import faultcheck
from consortium.bench.faultlab import Lab, params_trail, wait_ended
from consortium.bench.faults import TrialOutcome
from consortium.bench.pg_scratch import scratch_database
from consortium.bench.replica_lab import LEASE_S, Replicas
from consortium.client import HubClient
from consortium.protocol import ProjectCreate
from consortium.scenario import propose_and_approve


def draw_kill(rng: random.Random, rounds: int, round_s: float) -> tuple[int, float]:
    """``(r, delay)``: the driver is killed ``delay`` seconds (up to one round's time) after round ``r`` of
    ``rounds`` was checkpointed (1 <= r <= rounds - 2, so that the kill lands before the run ends)."""
    return rng.randint(1, max(1, rounds - 2)), round(rng.uniform(0.0, round_s), 3)


@dataclass(kw_only=True)
class ReplicaKill(TrialOutcome):
    index: int
    after_round: int
    delay_s: float
    takeover_s: float | None = None


def _reach(admin: HubClient, run_id: int, round_number: int, timeout: float = 120.0) -> bool:
    """Wait until the run checkpointed round ``round_number``; False when it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = admin.run(run_id)
        if run["status"] != "running":
            return False
        if run["current_round"] >= round_number:
            return True
        time.sleep(0.05)
    raise TimeoutError(f"run {run_id} did not reach round {round_number} within {timeout:.0f} s")


def replica_kill_trial(cluster: Replicas, index: int, project_id: int, after_round: int, delay_s: float,
                       reference: list[str]) -> ReplicaKill:
    """One run of the project with its driving replica SIGKILLed ``delay_s`` after round ``after_round``, the
    takeover timed, the killed replica restarted, the run finished and checked."""
    trial = ReplicaKill(index=index, after_round=after_round, delay_s=delay_s)
    with cluster.admin() as admin:
        run_id = admin.start_run(project_id)["id"]
        reached = _reach(admin, run_id, after_round)
    victim = None
    if reached:
        time.sleep(delay_s)
        victim = cluster.wait_driver(run_id, cluster.lease_s)
    if victim is not None:
        victim.kill()
        killed, killed_wall = time.monotonic(), time.time()
        with cluster.admin() as admin:
            trial.fired = admin.run(run_id)["status"] == "running"
        if trial.fired:
            taken = cluster.wait_driver(run_id, cluster.lease_s + 15, other_than=victim)
            if taken is None:
                trial.problems.append("no other replica took the lease over")
            else:
                trial.takeover_s = time.monotonic() - killed
        cluster.restart(victim)
    progress = wait_ended(cluster, run_id)
    if not trial.fired:
        return trial  # the run ended before the kill (or its lease could be found): a miss
    finished = progress.run.finished_at
    trial.recovery_s = finished.timestamp() - killed_wall if finished else time.monotonic() - killed
    trial.completed = progress.run.status == "completed"
    if not trial.completed:
        trial.problems.append(f"run {run_id} {progress.run.status}: {progress.run.error}")
    trail = params_trail(progress)
    trial.same_params = trail == reference
    if trial.completed and not trial.same_params:
        trial.problems.append(f"params differ from the uninterrupted run: {trail} vs {reference}")
    trial.problems += _check(cluster, run_id, trial)
    return trial


def _check(cluster: Replicas, run_id: int, trial: ReplicaKill) -> list[str]:
    url = cluster.db_url
    findings = faultcheck.Findings()
    rounds = faultcheck.check_run_rows(url, run_id, findings)
    faultcheck.check_ledger(url, findings)
    faultcheck.check_blob_store(cluster.blob_dir, url, findings)
    left = cluster.update_blobs_left()
    if left:
        findings.add(f"{len(left)} update blob(s) left in the blob store: {'; '.join(left)}")
    trial.abandoned_rounds = rounds.get("abandoned", 0)
    if trial.abandoned_rounds > 2:
        findings.add(f"{trial.abandoned_rounds} rounds abandoned for one kill")
    return findings.problems


def run_replica_kills(cluster: Replicas, kills: int, seed: int, rounds: int,
                      console: Console | None = None) -> dict[str, Any]:
    """The reference run, then ``kills`` driving-replica kills (one per run of the same spec seed; a kill that
    missed its run is drawn again, at most ``kills`` more times); the figures."""
    console = console or Console()
    rng = random.Random(seed)
    started = time.monotonic()
    project_id = _project(cluster, Lab.spec("replicas-reference", rounds))
    with cluster.admin() as admin:
        ref_started = time.monotonic()
        run_id = admin.start_run(project_id)["id"]
    ref = wait_ended(cluster, run_id)
    run_s = time.monotonic() - ref_started
    if ref.run.status != "completed":
        raise RuntimeError(f"the reference run failed: {ref.run.error}\n{cluster.logs()}")
    reference = params_trail(ref)
    round_s = statistics.median(r.wall_s for r in ref.rounds)
    console.print(f"an uninterrupted run through the proxy: {rounds} rounds in {run_s:.2f} s")
    trials: list[ReplicaKill] = []
    while sum(t.fired for t in trials) < kills and len(trials) < 2 * kills:
        index = len(trials) + 1
        after_round, delay_s = draw_kill(rng, rounds, round_s)
        project_id = _project(cluster, Lab.spec(f"replicas-{index}", rounds))
        trial = replica_kill_trial(cluster, index, project_id, after_round, delay_s, reference)
        trials.append(trial)
        verdict = "ok" if trial.ok else ("missed" if not trial.fired else "FAILED: " + "; ".join(trial.problems))
        takeover = f"{trial.takeover_s:.2f} s" if trial.takeover_s is not None else "-"
        console.print(f"replica kill {sum(t.fired for t in trials)}/{kills} after round {after_round} "
                      f"+{delay_s:.3f} s: {verdict} (takeover {takeover}, abandoned {trial.abandoned_rounds}, "
                      f"run done {trial.recovery_s:.1f} s after the kill)", markup=False)
    fired = [t for t in trials if t.fired]
    takeovers = [t.takeover_s for t in fired if t.takeover_s is not None]
    return {
        "kills": len(fired), "asked": kills, "missed": len(trials) - len(fired), "rounds": rounds, "seed": seed,
        "lease_s": cluster.lease_s, "database": "PostgreSQL",
        "completed": sum(t.completed for t in fired), "same_params": sum(t.same_params for t in fired),
        "all_checks": sum(t.ok for t in fired),
        "abandoned_rounds": dict(Counter(t.abandoned_rounds for t in fired)),
        "takeover_median_s": statistics.median(takeovers) if takeovers else None,
        "takeover_max_s": max(takeovers) if takeovers else None,
        "median_recovery_s": statistics.median(t.recovery_s for t in fired) if fired else None,
        "reference_run_s": run_s, "seconds": time.monotonic() - started,
        "trials": [asdict(t) for t in trials],
    }


def _project(cluster: Replicas, spec: ProjectCreate) -> int:
    return propose_and_approve(cluster.consortium, spec)["id"]


def replica_kills_bench(workdir: Path, pg_admin_url: str, kills: int, seed: int, rounds: int,
                        console: Console | None = None, lease_s: float = LEASE_S) -> dict[str, Any]:
    """:func:`run_replica_kills` on a fresh cluster over a scratch database of ``pg_admin_url``'s cluster
    (dropped afterwards)."""
    with scratch_database(pg_admin_url, "consortium_replicas") as db_url:
        cluster = Replicas(db_url, workdir, lease_s)
        try:
            cluster.start()
            cluster.start_nodes()
            return run_replica_kills(cluster, kills, seed, rounds, console)
        finally:
            cluster.stop()


def _seconds(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f} s"


def replica_kills_markdown(result: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    """The replica-kill section of BENCHMARKS.md."""
    m, k = machine, result["kills"]
    return "\n".join([
        f"Command: `{command}`",
        f"Machine: {m['cpu']} ({m['cores']} cores, shared with other engineers' test runs while measured), "
        f"{m['python']}, torch {m['torch']}; {result['database']}; measured {m['date']}.",
        "",
        "Two hub replicas (`--replica --lease-s "
        f"{result['lease_s']:g}`, one database, one blob store) behind HAProxy, 3 node processes talking to the "
        f"proxy, digits MLP, {result['rounds']} rounds per run, min_nodes 3. One uninterrupted run, then each "
        "run of the same spec seed has the replica holding its lease SIGKILLed after a round and a delay drawn "
        f"from a seeded generator (seed {result['seed']}); the other replica takes the lease over once it "
        "expires and the killed one is restarted on its port. Every round's params digest is compared with the "
        "uninterrupted run's; the ledger is verified from the database, the blob store has no orphan, corrupt "
        "or half-written file and no update blob, and the run has no open round or task.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| driving-replica kills (runs interrupted) | **{k}** of {result['asked']} asked; {result['missed']} "
        "drawn kills missed their run and were drawn again |",
        f"| runs completed | **{result['completed']}/{k}** |",
        f"| same params as the uninterrupted run, every round | **{result['same_params']}/{k}** |",
        f"| every check held (ledger, blobs, rounds) | **{result['all_checks']}/{k}** |",
        f"| takeover (kill to the other replica holding the lease), median / max | "
        f"{_seconds(result['takeover_median_s'])} / {_seconds(result['takeover_max_s'])} |",
        f"| rounds abandoned per kill (count of runs) | "
        f"{', '.join(f'{a}: {n}' for a, n in sorted(result['abandoned_rounds'].items()))} |",
        f"| median time from the kill to the run completed | {_seconds(result['median_recovery_s'], 1)} |",
        f"| an uninterrupted run through the proxy | {result['reference_run_s']:.2f} s |",
        f"| whole bench | {result['seconds'] / 60:.1f} min |",
    ])
