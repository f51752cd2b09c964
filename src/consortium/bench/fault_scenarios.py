"""The fault harness's scenarios beside the hub kills (:mod:`consortium.bench.faults`): PostgreSQL restarted
mid-run, a node killed in each phase, connections cut and delayed by a proxy, the blob store's disk full.
Each returns a plain dict with ``ok`` and the ``problems`` it found."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from consortium.bench.faultlab import Lab, params_trail, run_events, wait_ended
from consortium.bench.faultproxy import FaultProxy
from consortium.bench.pg_scratch import scratch_database
from consortium.faults import ENV
from consortium.scenario import ORGS

PG_RESTART = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart", "-m", "fast"]


def _finish(result: dict[str, Any], lab: Lab, run_id: int, progress, reference: list[str] | None) -> dict[str, Any]:
    """The common checks of a run that must complete (with ``reference``'s params when given)."""
    problems = result.setdefault("problems", [])
    result["completed"] = progress.run.status == "completed"
    if not result["completed"]:
        problems.append(f"run {run_id} {progress.run.status}: {progress.run.error}")
    if reference is not None:
        result["same_params"] = params_trail(progress) == reference
        if not result["same_params"]:
            problems.append("params differ from the uninterrupted run")
    findings, _ = lab.check(run_id)
    problems += findings.problems
    result["ok"] = not problems
    return result


# ------------------------------------------------------------------------------------------ PostgreSQL


@contextmanager
def pg_database(admin_url: str) -> Iterator[str]:
    """A fresh database in the cluster of ``admin_url`` (dropped afterwards); its SQLAlchemy URL."""
    with scratch_database(admin_url, "consortium_faults") as url:
        yield url


def pg_restart(workdir: Path, admin_url: str, rounds: int = 8) -> dict[str, Any]:
    """A run on PostgreSQL whose cluster is restarted (fast shutdown: every connection cut) after round 1:
    the hub rides through and the run completes with the params of an uninterrupted run."""
    result: dict[str, Any] = {"scenario": "postgresql restarted mid-run", "problems": []}
    with pg_database(admin_url) as db_url:
        lab = Lab.open(workdir, db_url)
        try:
            lab.start_nodes()
            reference = _reference(lab, rounds)
            project = lab.project(lab.spec("faults-pg", rounds))
            with lab.admin() as admin:
                run_id = admin.start_run(project["id"])["id"]
                while admin.run(run_id)["current_round"] < 1:
                    time.sleep(0.05)
            started = time.monotonic()
            restart = subprocess.run(PG_RESTART, capture_output=True, text=True, timeout=60)
            result["outage_s"] = time.monotonic() - started
            if restart.returncode != 0:
                result["problems"].append(f"pg_ctlcluster failed: {restart.stderr.strip()}")
            progress = wait_ended(lab, run_id)
            result["abandoned_rounds"] = len(run_events(lab.ledger(), run_id, "round.abandoned"))
            return _finish(result, lab, run_id, progress, reference)
        finally:
            lab.close()


def _reference(lab: Lab, rounds: int) -> list[str]:
    from consortium.bench.faults import reference_run

    return reference_run(lab, rounds)[0]


# ------------------------------------------------------------------------------------------ nodes


NODE_PHASES = {"stats": 1, "fit": 2, "evaluate": 1}
"""The phase a node is killed in, and at which of its tasks of that kind (fit: its second, round 2)."""


NODE_KILL_HYPERPARAMETERS = {"layers": [64, 256, 10], "lr": 0.05, "momentum": 0.9, "local_epochs": 10,
                             "batch_size": 32}
"""Slower rounds than the hub kills' (a restarted node process needs seconds to import its libraries and
must find the run still going)."""


def node_kill(lab: Lab, phase: str, rounds: int | None = None, round_timeout: float = 4.0) -> dict[str, Any]:
    """A node killed as it starts its task of ``phase``: the phase closes at its timeout with min_nodes=2,
    the drop is in the ledger, the node (restarted as soon as the hub recorded the drop) rejoins a later
    round (but after the last phase, evaluate). ``rounds`` keeps the run going while the new process
    imports its libraries (seconds; rounds of the two others take ~0.1 s); evaluate, after the last round,
    needs few."""
    rounds = rounds or (20 if phase == "evaluate" else 200)
    victim = ORGS[list(NODE_PHASES).index(phase)]
    result: dict[str, Any] = {"scenario": f"node killed in the {phase} phase", "victim": victim, "problems": []}
    problems = result["problems"]
    lab.wait_ready()
    extra = {"preprocessing": {"scale": "standardise"}} if phase == "stats" else {}
    algorithm = {"name": "classifier", "hyperparameters": NODE_KILL_HYPERPARAMETERS}
    project = lab.project(lab.spec(f"faults-node-{phase}", rounds, min_nodes=2, round_timeout=round_timeout,
                                   algorithm=algorithm, **extra))
    lab.nodes[victim].kill()
    lab.start_nodes([victim], env={victim: {ENV: f"node.{phase}:{NODE_PHASES[phase]}"}})
    with lab.admin() as admin:
        run_id = admin.start_run(project["id"])["id"]
    deadline = time.monotonic() + 120
    while lab.nodes[victim].alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if lab.nodes[victim].alive():
        problems.append(f"{victim} never reached its {phase} task")
    died = time.monotonic()
    if not _wait_dropped(lab, victim, run_id, timeout=round_timeout + 60):
        problems.append(f"the hub recorded no drop of {victim} within {round_timeout + 60:.0f} s")
    lab.restart_node(victim)
    back_at = _back_at_round(lab, victim, run_id)
    result["node_back_after_s"] = round(time.monotonic() - died, 1)
    result["node_back_at_round"] = back_at
    progress = wait_ended(lab, run_id)
    ref = f"{victim}/digits"
    drops = [e for e in run_events(lab.ledger(), run_id, "task.dropped") if e["payload"]["org"] == victim]
    if not drops:
        problems.append(f"no task.dropped entry for {victim}")
    dropped_in = [r.round for r in progress.rounds if ref in r.dropped]
    result["dropped_in_rounds"] = dropped_in
    if phase != "evaluate":  # the statistics phase is round 0, before every round listed
        since = dropped_in[0] if dropped_in else 0
        back = [r.round for r in progress.rounds if ref in r.participants and r.round > since]
        result["rejoined_round"] = min(back, default=None)
        if not back and back_at is not None and back_at < rounds - 1:
            problems.append(f"{victim} polled again in round {back_at} and did not rejoin a later round")
        elif not back:
            problems.append(f"{victim}'s restarted process was not back before the run's last round")
    result["round_timeout_s"] = round_timeout
    return _finish(result, lab, run_id, progress, None)


def _wait_dropped(lab: Lab, org: str, run_id: int, timeout: float) -> bool:
    """Wait until the ledger holds ``org``'s task.dropped entry of the run (back only after its phase
    closed, so the drop is what is checked): whether it came in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e["payload"]["org"] == org for e in run_events(lab.ledger(), run_id, "task.dropped")):
            return True
        time.sleep(0.5)
    return False


def _back_at_round(lab: Lab, org: str, run_id: int) -> int | None:
    """The run's current round when ``org``'s restarted node started polling; None if the run ended first."""
    with lab.admin() as admin:
        while True:
            run = admin.run(run_id)
            if lab.node_polling(org):
                return run["current_round"]
            if run["status"] != "running":
                return None
            time.sleep(0.1)


# ------------------------------------------------------------------------------------------ proxy


def proxy_run(lab: Lab, rounds: int, reference: list[str], seed: int = 0, spec_seed: int = 11) -> dict[str, Any]:
    """The nodes talk to the hub through a proxy (drawing from ``seed``) that cuts half its connections
    (after up to 64 KiB) and delays 30 %: the run of spec seed ``spec_seed``
    completes with the params of the uninterrupted run (nodes retry)."""
    result: dict[str, Any] = {"scenario": "connections cut and delayed by a proxy", "problems": []}
    proxy = FaultProxy(lab.hub.port, cut=0.5, delay=0.3, max_delay_s=0.3, seed=seed).start()
    try:
        for org in ORGS:
            lab.nodes[org].kill()
        lab.start_nodes(url=proxy.url)
        project = lab.project(lab.spec(f"faults-proxy-{seed}", rounds, seed=spec_seed))
        with lab.admin() as admin:
            run_id = admin.start_run(project["id"])["id"]
        progress = wait_ended(lab, run_id)
        result.update(connections=proxy.stats.connections, cut=proxy.stats.cut, delayed=proxy.stats.delayed)
        return _finish(result, lab, run_id, progress, reference)
    finally:
        for org in ORGS:
            lab.nodes[org].kill()
        proxy.stop()
        lab.start_nodes()


# ------------------------------------------------------------------------------------------ disk full


@contextmanager
def tmpfs(path: Path, size_kb: int) -> Iterator[Path]:
    """A tmpfs of ``size_kb`` KiB mounted at ``path`` (needs the right to mount; ``PermissionError`` else)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        raise PermissionError(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def disk_full(workdir: Path, rounds: int = 10, reference: list[str] | None = None) -> dict[str, Any]:
    """The blob store on a tmpfs with room for the test set and about two rounds' params: the run fails
    with a recorded reason naming the full disk, nothing is half-written, no round is left open; with room
    again, a new run of the project completes (with ``reference``'s params when given)."""
    result: dict[str, Any] = {"scenario": "blob store disk full", "problems": []}
    problems = result["problems"]
    test_set_kb = 4 * math.ceil(100_000 / 4096)
    blob_dir = Path(workdir) / "hub" / "blobs"
    with tmpfs(blob_dir, test_set_kb + 40):
        lab = Lab.open(workdir)
        try:
            lab.start_nodes()
            project = lab.project(lab.spec("faults-disk", rounds))
            with lab.admin() as admin:
                run_id = admin.start_run(project["id"])["id"]
            progress = wait_ended(lab, run_id)
            result["first_run"] = progress.run.status
            result["reason"] = progress.run.error
            if progress.run.status != "failed" or "No space left" not in (progress.run.error or ""):
                problems.append(f"the first run ended {progress.run.status}: {progress.run.error}")
            failed = [e for e in run_events(lab.ledger(), run_id, "run.failed")]
            if not failed:
                problems.append("no run.failed ledger entry")
            findings, _ = lab.check(run_id)
            problems += findings.problems
            subprocess.run(["mount", "-o", "remount,size=16m", str(blob_dir)], check=True)
            with lab.admin() as admin:
                second = admin.start_run(project["id"])["id"]
            progress = wait_ended(lab, second)
            return _finish(result, lab, second, progress, reference)
        finally:
            lab.close()
