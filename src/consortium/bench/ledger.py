"""`consortium bench ledger`: what signing costs an append, and how long a full audit of a big ledger takes.

- **Appends**: ``ledger.record`` + commit through the hub's service on a SQLite file, paced at ``rate``
  appends per second for ``seconds``, with the hub's checkpointer extending the Merkle tree and signing
  checkpoints beside it (every second, as in the hub); latency percentiles of each append's transaction.
- **Verify**: ``entries`` signed entries (a quarter org-signed votes, a checkpoint every 64) made straight
  with the pure functions (:mod:`consortium.bench.ledger_build`) into a fresh SQLite hub database, then timed
  ``verify_from_db``: chain, every hub and actor signature, the Merkle root at every checkpoint.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, update

from consortium.bench.ledger_build import iter_ledger
from consortium.crypto import OrgIdentity

BATCH = 5000


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def append_latency(workdir: Path, rate: float, seconds: float) -> dict[str, Any]:
    """Paced appends through the service with the checkpointer running; latency in ms."""
    from consortium.hub.db.session import make_engine, migrate, session_factory
    from consortium.hub.services import checkpoints, hub_identity, ledger
    from consortium.hub.services.hub_key import HubKey

    engine = make_engine(f"sqlite:///{workdir / 'append.db'}")
    migrate(engine)
    hub_identity.start(engine, HubKey.generate())
    sessions = session_factory(engine)
    stop = threading.Event()
    made = []

    def checkpointer() -> None:
        with sessions() as session:
            while not stop.wait(1.0):
                made.append(checkpoints.maybe_checkpoint(session, datetime.now(UTC), 64, 10.0))

    thread = threading.Thread(target=checkpointer, daemon=True)
    thread.start()
    latencies = []
    count = int(rate * seconds)
    start = time.perf_counter()
    with sessions() as session:
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t0 = time.perf_counter()
            ledger.record(session, "task.answered", "org:north", {"task_id": i, "round": i // 3},
                          scope=ledger.project_scope(1))
            session.commit()
            latencies.append(1000.0 * (time.perf_counter() - t0))
    stop.set()
    thread.join()
    engine.dispose()
    return {"appends": count, "rate_per_s": rate, "p50_ms": statistics.median(latencies),
            "p99_ms": _quantile(latencies, 0.99), "max_ms": max(latencies),
            "checkpoints": sum(1 for m in made if m is not None)}


def build_database(url: str, entries: int, seed: int = 0) -> dict[str, Any]:
    """A hub database holding ``entries`` signed entries and their checkpoints (every 64); build time in s."""
    from consortium.hub.db.models import LedgerCheckpoint, LedgerEntry, LedgerHead
    from consortium.hub.db.session import make_engine, migrate

    rng = random.Random(seed)
    hub = OrgIdentity.from_private_key("hub", Ed25519PrivateKey.generate())
    orgs = [OrgIdentity.from_private_key(name, Ed25519PrivateKey.generate())
            for name in ("north", "south", "east")]
    engine = make_engine(url)
    migrate(engine)
    t0 = time.perf_counter()
    rows: list[dict] = []
    cps: list[dict] = []
    last = None
    with engine.begin() as conn:
        hub_id = rng.getrandbits(128).to_bytes(16, "big").hex()
        for entry, made in iter_ledger(entries, hub, orgs, rng, hub_id, checkpoint_every=64):
            rows.append({**asdict(entry), "project_id": None, "dataset_id": None})
            if made is not None:
                cps.append(asdict(made))
            last = entry
            if len(rows) >= BATCH:
                conn.execute(insert(LedgerEntry.__table__), rows)
                rows = []
        if rows:
            conn.execute(insert(LedgerEntry.__table__), rows)
        if cps:
            conn.execute(insert(LedgerCheckpoint.__table__), cps)
        if last is not None:
            conn.execute(update(LedgerHead.__table__).values(seq=last.seq, hash=last.hash))
    engine.dispose()
    return {"entries": entries, "checkpoints": len(cps), "build_s": time.perf_counter() - t0}


def verify_time(workdir: Path, entries: int) -> dict[str, Any]:
    from consortium.ledger_audit import verify_from_db

    url = f"sqlite:///{workdir / 'verify.db'}"
    built = build_database(url, entries)
    t0 = time.perf_counter()
    report = verify_from_db(url)
    elapsed = time.perf_counter() - t0
    if not report.ok or report.checked != entries:
        raise RuntimeError(f"the generated ledger did not verify: {report.reason}")
    return {**built, "verify_s": elapsed, "verify_checkpoints": report.checkpoints,
            "per_entry_us": 1e6 * elapsed / entries}


def run_ledger_bench(rate: float, seconds: float, entries: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="consortium-ledger-bench-") as scratch:
        return {"append": append_latency(Path(scratch), rate, seconds),
                "verify": verify_time(Path(scratch), entries)}


def report_markdown(result: dict[str, Any], machine: dict[str, Any]) -> str:
    a, v = result["append"], result["verify"]
    return "\n".join([
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['python']}, {machine['date']}.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| append latency p50 at {a['rate_per_s']:g}/s ({a['appends']} appends, SQLite, checkpointer on) "
        f"| {a['p50_ms']:.2f} ms | |",
        f"| append latency p99 | {a['p99_ms']:.2f} ms (max {a['max_ms']:.1f}) | ≤ 20 ms |",
        f"| full verify of {v['entries']:,} entries ({v['checkpoints']:,} checkpoints) "
        f"| {v['verify_s']:.1f} s "
        f"({v['per_entry_us']:.0f} µs/entry) | 10^6 in ≤ 300 s |",
        f"| generating them (pure functions, signed) | {v['build_s']:.1f} s | |",
    ])
