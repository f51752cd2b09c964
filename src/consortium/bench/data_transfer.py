"""``consortium bench data``: publish and download a big table through a real hub on loopback.

Setup: a hub process (SQLite, or the PostgreSQL server given with ``--db``) and one org. A generated table of
random numbers (6 float64 columns of several scales and 3 int64 columns, written as canonical CSV in
batches, in constant memory) is registered by that org and made public. Each repetition then

- publishes it as a new version from a node-side process, ``consortium.node.open_data``'s calls (those of
  ``consortium dataset publish``): the file is canonical CSV, found so when it was registered, so it is
  uploaded as it is in chunks and published, the hub checking its SHA-256 (the *transfer*);
- publishes it again *re-encoded*, as a file in another form would be: read in batches, checked against its
  card's table hash and written as canonical CSV (the *export*), then the transfer;
- downloads that version in a client process without credentials (``open_data.download``, the SDK call of
  ``consortium dataset download``: streamed to disk, SHA-256 checked on arrival);
- runs the peer: the same file PUT and GET with a raw httpx stream against a trivial static server
  (``http.server``) on loopback, no hashing, no checks.

Memory: the hub's peak resident size during each transfer minus its size before (``clear_refs`` resets the
peak, ``VmHWM`` reads it; a 20 ms sampler of ``VmRSS`` backs it up), and each worker's own peak minus its size
once its imports are done. MB = 10^6 bytes; medians of the repetitions.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from consortium.bench.data_worker import memory_kb, reset_peak
from consortium.bench.report import machine_info
from consortium.client import HubClient
from consortium.launch import child_env, free_port, provision_org, start_hub
from consortium.node.canonical_csv import format_rows, header_line
from consortium.node.registry import LocalRegistry
from consortium.bench.pg_scratch import scratch_database
from consortium.protocol import ColumnSchema, DatasetCardIn, DatasetSchema
from consortium.table_hash import StreamingTableHash, schema_columns

MB = 1_000_000
ORG = "bench-org"
NAME = "big-table"
TARGET_MB_S = 100.0
TARGET_GROWTH_MB = 100.0
GEN_ROWS = 100_000
SCHEMA = DatasetSchema(
    features=[*(ColumnSchema(name=f"x{i}", dtype="float64") for i in range(6)),
              ColumnSchema(name="count", dtype="int64"), ColumnSchema(name="code", dtype="int64")],
    target=ColumnSchema(name="label", dtype="int64"))


def _batch(rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
    return {"x0": rng.normal(size=rows), "x1": rng.uniform(0, 1000, rows), "x2": rng.lognormal(0, 2, rows),
            "x3": rng.normal(0, 1e3, rows), "x4": np.round(rng.normal(50, 10, rows), 2),
            "x5": rng.exponential(1e-3, rows), "count": rng.integers(0, 10**6, rows),
            "code": rng.integers(-(2**40), 2**40, rows), "label": rng.integers(0, 10, rows)}


def generate_table(path: Path, size_bytes: int, seed: int) -> tuple[int, str]:
    """Write at least ``size_bytes`` of random rows as canonical CSV; (rows, canonical table hash)."""
    rng = np.random.default_rng(seed)
    columns = schema_columns(SCHEMA)
    table = StreamingTableHash(SCHEMA, path.parent)
    with path.open("wb") as out:
        out.write(header_line(columns))
        while out.tell() < size_bytes:
            batch = _batch(rng, GEN_ROWS)
            table.update(batch)
            out.write(format_rows(columns, batch))
    return table.rows, table.hexdigest()


@dataclass
class _Watch:
    """The hub's resident size before a transfer and its peak during it."""

    pid: int
    before_kb: int = 0
    sampled_kb: int = 0
    exact: bool = False

    def growth_mb(self) -> float:
        peak = max(self.sampled_kb, memory_kb(self.pid)["VmHWM"] if self.exact else 0)
        return (peak - self.before_kb) * 1024 / MB


@contextmanager
def watched(pid: int) -> Iterator[_Watch]:
    watch = _Watch(pid, before_kb=memory_kb(pid)["VmRSS"])
    watch.exact = reset_peak(pid)
    watch.sampled_kb = watch.before_kb
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            watch.sampled_kb = max(watch.sampled_kb, memory_kb(pid)["VmRSS"])

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        stop.set()
        thread.join()


def _worker(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "consortium.bench.data_worker", *args], env=child_env(),
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"bench worker {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _register(hub_url: str, admin: HubClient, workdir: Path, size_bytes: int,
              seed: int) -> tuple[Path, int, float]:
    """The org, its registered table's rows, and the seconds its registration on the node took (one pass over
    the file: canonical form and table hash)."""
    org_dir = workdir / "orgs" / ORG
    identity = provision_org(admin, hub_url, org_dir, ORG)
    source = workdir / "data" / f"{NAME}.csv"
    source.parent.mkdir(parents=True)
    rows, table_sha256 = generate_table(source, size_bytes, seed)
    card = DatasetCardIn.model_validate({
        "name": NAME, "description": "random numbers for the data transfer bench",
        "schema": SCHEMA.model_dump(mode="json"), "rows": rows, "sha256": table_sha256, "license": "CC0-1.0",
        "visibility": "public", "file_format": "csv"})
    with HubClient(hub_url, identity=identity) as client:
        client.register_dataset(card)
        client.set_source_rights(f"{ORG}/{NAME}", visibility="public", download="everyone")
    started = time.perf_counter()
    if LocalRegistry(org_dir).add(NAME, source, "label", card).canonical is None:
        raise RuntimeError("the generated table was not found canonical at registration")
    return org_dir, rows, time.perf_counter() - started


def _repetition(index: int, hub: Any, org_dir: Path, workdir: Path, peer_url: str) -> dict[str, Any]:
    ref, version, source = f"{ORG}/{NAME}", f"r{index}", workdir / "data" / f"{NAME}.csv"
    load = os.getloadavg()[0]
    with watched(hub.popen.pid) as hub_publish:
        published = _worker("publish", "--hub", hub.url, "--org-dir", str(org_dir), "--ref", ref, "--version",
                            version, "--work", str(workdir / "export"))
    reencoded = _worker("publish", "--hub", hub.url, "--org-dir", str(org_dir), "--ref", ref, "--version",
                        f"{version}-reencoded", "--work", str(workdir / "export"), "--reencode")
    out = workdir / "download.csv"
    with watched(hub.popen.pid) as hub_download:
        downloaded = _worker("download", "--hub", hub.url, "--ref", ref, "--version", version, "--out", str(out))
    out.unlink()
    put = _worker("put", "--url", f"{peer_url}/upload.csv", "--file", str(source))
    (workdir / "peer" / "upload.csv").unlink()
    got = _worker("get", "--url", f"{peer_url}/{NAME}.csv", "--out", str(out))
    out.unlink()
    size = published["bytes"]
    return {
        "publish_mb_s": size / MB / published["seconds"],
        "reencoded_publish_mb_s": size / MB / reencoded["seconds"],
        "export_mb_s": size / MB / reencoded["export_s"],
        "transfer_mb_s": size / MB / reencoded["send_s"],
        "download_mb_s": size / MB / downloaded["seconds"],
        "peer_put_mb_s": put["bytes"] / MB / put["seconds"],
        "peer_get_mb_s": got["bytes"] / MB / got["seconds"],
        "hub_growth_publish_mb": hub_publish.growth_mb(),
        "hub_growth_download_mb": hub_download.growth_mb(),
        "node_growth_mb": published["growth_mb"] * (1 << 20) / MB,
        "client_growth_mb": downloaded["growth_mb"] * (1 << 20) / MB,
        "peak_exact": hub_publish.exact and published["peak_exact"],
        "load_average": (load + os.getloadavg()[0]) / 2,
        "bytes": size,
    }


@contextmanager
def _database(db: str | None) -> Iterator[str | None]:
    """None (SQLite) or a fresh database on the PostgreSQL server of ``db`` (dropped afterwards)."""
    if db is None:
        yield None
        return
    with scratch_database(db, "bench_data") as url:
        yield url


def run_data_bench(size_mb: float, repeats: int = 3, seed: int = 0, db: str | None = None,
                   say: Any = print) -> dict[str, Any]:
    """Generate, register, then publish and download the table ``repeats`` times (with the peer)."""
    workdir = Path(tempfile.mkdtemp(prefix="consortium-bench-data-"))
    processes = []
    try:
        with _database(db) as db_url:
            hub = start_hub(workdir / "hub", db_url=db_url)
            processes.append(hub)
            with hub.client() as admin:
                say(f"generating and registering a {size_mb:g} MB table")
                org_dir, rows, register_s = _register(hub.url, admin, workdir, int(size_mb * MB), seed)
            (workdir / "peer").mkdir()
            shutil.copy(workdir / "data" / f"{NAME}.csv", workdir / "peer" / f"{NAME}.csv")
            port = free_port()
            peer = subprocess.Popen([sys.executable, "-m", "consortium.bench.data_worker", "serve", "--root",
                                     str(workdir / "peer"), "--port", str(port)], env=child_env(),
                                    start_new_session=True)
            processes.append(peer)
            time.sleep(1.0)
            reps = []
            for index in range(1, repeats + 1):
                reps.append(_repetition(index, hub, org_dir, workdir, f"http://127.0.0.1:{port}"))
                say(f"repetition {index}/{repeats}: publish {reps[-1]['publish_mb_s']:.0f} MB/s, download "
                    f"{reps[-1]['download_mb_s']:.0f} MB/s")
    finally:
        for proc in reversed(processes):
            stop = getattr(proc, "stop", None)
            if stop is not None:
                stop()
            else:
                proc.terminate()
                proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    medians = {key: statistics.median(r[key] for r in reps) for key in reps[0] if key != "peak_exact"}
    return {"suite": "data", "size_mb": reps[0]["bytes"] / MB, "rows": rows, "repeats": repeats,
            "register_mb_s": reps[0]["bytes"] / MB / register_s,
            "db": "PostgreSQL" if db else "SQLite", "medians": medians, "repetitions": reps,
            "peak_exact": all(r["peak_exact"] for r in reps), "machine": machine_info()}


def report_markdown(result: dict[str, Any], command: str) -> str:
    """The BENCHMARKS.md section: medians against the targets, with the peer's figures of the same run."""
    m, med = result["machine"], result["medians"]
    loads = ", ".join(f"{r['load_average']:.1f}" for r in result["repetitions"])

    def speed(key: str, target: bool = True) -> str:
        runs = ", ".join(f"{r[key]:.0f}" for r in result["repetitions"])
        mark = f" (target ≥ {TARGET_MB_S:.0f}: {'met' if med[key] >= TARGET_MB_S else 'not met'})" if target else ""
        return f"**{med[key]:.0f} MB/s**{mark}; runs {runs}"

    def growth(key: str, target: bool = True) -> str:
        mark = f" (target ≤ {TARGET_GROWTH_MB:.0f}: {'met' if med[key] <= TARGET_GROWTH_MB else 'not met'})" if target else ""
        return f"**{med[key]:.1f} MB**{mark}"

    return "\n".join([
        f"Command: `{command}`",
        f"Machine: {m['cpu']} ({m['cores']} cores), {m['python']}, {platform.system()}; "
        f"hub on {result['db']}, loopback; measured {m['date']}.",
        f"Table: {result['size_mb']:.0f} MB of canonical CSV, {result['rows']:,} rows of 6 float64 and 3 int64 random "
        f"columns; medians of {result['repeats']} repetitions (MB = 10^6 bytes). Load average (1 min) during the "
        f"repetitions: {loads} on "
        f"{m['cores']} cores.",
        "",
        "| measure | median |",
        "|---|---|",
        f"| publish, end to end (the registered file is canonical CSV: sent as it is) | {speed('publish_mb_s')} |",
        f"| publish re-encoded, end to end (export + transfer, as for a file in another form) | "
        f"{speed('reencoded_publish_mb_s', False)} |",
        f"| — export on the node (read in batches, table hash checked, canonical CSV written) | "
        f"{speed('export_mb_s', False)} |",
        f"| — transfer (chunked upload, hub SHA-256 check, publish) | {speed('transfer_mb_s')} |",
        f"| download (streamed, SHA-256 checked on arrival) | {speed('download_mb_s')} |",
        f"| peer: raw httpx PUT to `http.server` | {speed('peer_put_mb_s', False)} |",
        f"| peer: raw httpx GET from `http.server` | {speed('peer_get_mb_s', False)} |",
        f"| transfer / peer PUT | {med['transfer_mb_s'] / med['peer_put_mb_s']:.2f} |",
        f"| download / peer GET | {med['download_mb_s'] / med['peer_get_mb_s']:.2f} |",
        f"| hub resident memory growth, publish | {growth('hub_growth_publish_mb')} |",
        f"| hub resident memory growth, download | {growth('hub_growth_download_mb')} |",
        f"| node process memory growth, publish | {growth('node_growth_mb')} |",
        f"| downloading client memory growth | {growth('client_growth_mb', False)} |",
        "",
        f"Registering the table on the node (once, before the repetitions: one pass finding it canonical and "
        f"checking its table hash) ran at {result['register_mb_s']:.0f} MB/s. "
        "Memory growth is the peak resident size during the transfer minus the size before it "
        + ("(peaks exact: `clear_refs` + `VmHWM`)." if result["peak_exact"] else
           "(peaks sampled every 20 ms: `clear_refs` was refused)."),
    ])

