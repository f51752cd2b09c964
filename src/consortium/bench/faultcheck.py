"""What must hold after a fault (``consortium bench faults``, ``tests/faults/``), read from the hub's own
database and blob store by a process outside the hub.

- the run ended as it must (completed with the uninterrupted run's params, round by round),
- the ledger verifies (:func:`consortium.ledger_audit.verify_from_db`: chain, signatures, checkpoints),
- no orphan blob: every file in the blob store is named by a row of the database (a blob's digest appears in
  a run, round, task, project, model, card or ledger row), and its content hashes to its name,
- nothing half-written: no temporary file of an atomic write is left in the blob store,
- no round of the run left open, and none of its tasks.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import MetaData, select

from consortium.hub.db.session import make_engine
from consortium.ledger_audit import verify_from_db
from consortium.statuses import OPEN_TASK_STATES, RoundStatus

DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass
class Findings:
    """What a check found wrong (empty: all held)."""

    problems: list[str] = field(default_factory=list)

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    @property
    def ok(self) -> bool:
        return not self.problems


def hub_db_url(data_dir: Path, db_url: str | None) -> str:
    """The database URL a hub started with ``db_url`` (None: its SQLite file) uses."""
    return db_url or f"sqlite:///{Path(data_dir) / 'hub.db'}"


def referenced_digests(url: str) -> set[str]:
    """Every SHA-256 hex digest that appears in any column of any table of the hub database."""
    engine = make_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        found: set[str] = set()
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                for row in conn.execute(select(table)):
                    found.update(DIGEST.findall(str(tuple(row)).lower()))
        return found
    finally:
        engine.dispose()


def check_blob_store(blob_root: Path, url: str, findings: Findings) -> int:
    """Orphan, corrupt and half-written files of the store under ``blob_root``; the number of blobs."""
    referenced = referenced_digests(url)
    count = 0
    for path in sorted(Path(blob_root).rglob("*")):
        if path.is_dir():
            continue
        if path.name.endswith(".tmp"):
            findings.add(f"half-written file left in the blob store: {path.name}")
            continue
        count += 1
        if hashlib.sha256(path.read_bytes()).hexdigest() != path.name:
            findings.add(f"blob {path.name[:16]}... does not hash to its name")
        if path.name not in referenced:
            findings.add(f"orphan blob {path.name[:16]}... (no row names it)")
    return count


def check_run_rows(url: str, run_id: int, findings: Findings) -> dict[str, int]:
    """Open rounds and open tasks of ``run_id`` (there must be none once it ended); the counts of its rounds
    by status."""
    engine = make_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine, only=["rounds", "tasks"])
        rounds, tasks = meta.tables["rounds"], meta.tables["tasks"]
        with engine.connect() as conn:
            statuses = [s for (s,) in conn.execute(select(rounds.c.status).where(rounds.c.run_id == run_id))]
            open_tasks = conn.execute(select(tasks.c.id).where(
                tasks.c.run_id == run_id, tasks.c.status.in_([str(s) for s in OPEN_TASK_STATES]))).all()
    finally:
        engine.dispose()
    counts = {status: statuses.count(status) for status in set(statuses)}
    if counts.get(RoundStatus.open.value):
        findings.add(f"run {run_id}: {counts[RoundStatus.open.value]} round(s) left open")
    if open_tasks:
        findings.add(f"run {run_id}: {len(open_tasks)} task(s) left open")
    return counts


def project_runs(url: str, project_id: int) -> list[int]:
    """The ids of the project's runs, oldest first."""
    engine = make_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine, only=["runs"])
        runs = meta.tables["runs"]
        with engine.connect() as conn:
            return list(conn.scalars(select(runs.c.id).where(runs.c.project_id == project_id).order_by(runs.c.id)))
    finally:
        engine.dispose()


def check_ledger(url: str, findings: Findings) -> None:
    report = verify_from_db(url)
    if not report.ok:
        findings.add(f"ledger does not verify: {report.reason}")


def check_all(data_dir: Path, db_url: str | None, run_id: int) -> tuple[Findings, dict[str, int]]:
    """Every check above on a hub's data directory and database for ``run_id``; the findings and the run's
    rounds by status."""
    url = hub_db_url(data_dir, db_url)
    findings = Findings()
    rounds = check_run_rows(url, run_id, findings)
    check_ledger(url, findings)
    check_blob_store(Path(data_dir) / "blobs", url, findings)
    return findings, rounds
