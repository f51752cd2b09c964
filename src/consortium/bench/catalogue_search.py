"""`consortium bench catalogue`: latency of catalogue searches over a hub with many dataset versions.

A real hub process (``consortium hub`` under uvicorn, on loopback) is started on a fresh database; the bench
then fills that database in bulk from its own process: orgs, ``versions // 2`` dataset cards (seeded spread
of licences, tasks, owners, visibilities, sizes and words), ``versions`` open data versions spread over 70%
of them (5% withdrawn; the rest federated only), and the catalogue index rows made by the hub's own
:func:`~consortium.hub.db.catalogue_models.entry_for`. A steward of one org and anonymous callers then send a
seeded mix of filtered searches (words, licence, task, owner, open, rows, bytes, sorts and pages) over HTTP;
each request's wall time from send to the whole answer is recorded, p50/p95/p99 per repetition, medians
of ``repeats`` repetitions reported.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ADMIN_TOKEN = "csm_" + "c" * 40
TARGET_P95_MS = 50.0
ORGS = 40
BATCH = 5000
LICENCES = (("CC-BY-4.0", 30), ("CC0-1.0", 20), ("MIT", 10), ("Apache-2.0", 8),
            ("CC-BY-SA-4.0", 8), ("ODbL-1.0", 6), ("CC-BY-NC-4.0", 6), ("Apache-2.0 OR MIT", 4), ("GPL-3.0-only", 3),
            ("CDLA-Permissive-2.0", 5))
TOPICS = ("diabetes", "retina", "cardiology", "oncology", "sepsis", "asthma", "stroke", "census", "income",
          "housing", "traffic", "weather", "air", "quality", "energy", "grid", "solar", "wind", "credit",
          "fraud", "churn", "retail", "sales", "insurance", "claims", "crop", "yield", "soil", "rainfall",
          "flights", "delays", "taxi", "bikes", "emissions", "water", "river", "forest", "fires", "wildlife",
          "birds", "genomics", "proteins", "drugs", "trials", "admissions", "readmission", "mortality",
          "school", "grades", "exams", "digits", "letters", "speech", "sensors", "machines", "failures")
WORDS = ("measurements", "records", "survey", "daily", "monthly", "hourly", "regional", "national", "hospital",
         "clinic", "patients", "customers", "devices", "anonymised", "aggregated", "labelled", "cleaned",
         "sample", "registry", "panel", "cohort", "study", "snapshot", "archive", "public", "benchmark")
COLUMNS = ("age", "sex", "postcode", "income", "region", "temperature", "pressure", "count", "price",
           "duration", "score", "weight", "height", "dose", "speed", "distance", "rate", "year")
VISIBILITIES = (("public", 40), ("members", 45), ("private", 15))
TARGETS = (("int64", 45), ("float64", 35), ("string", 10), (None, 10))


def _pick(rng: random.Random, weighted: tuple[tuple[Any, int], ...]) -> Any:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def _datasets(rng: random.Random, count: int, org_ids: list[int]) -> Iterator[dict]:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(count):
        topic = rng.sample(TOPICS, 2)
        columns = rng.sample(COLUMNS, rng.randint(3, 8))
        target = _pick(rng, TARGETS)
        schema = {"features": [{"name": c, "dtype": rng.choice(("int64", "float64"))} for c in columns],
                  "target": None if target is None else {"name": "outcome", "dtype": target}}
        description = " ".join([*topic, *rng.sample(WORDS, rng.randint(5, 10))]).capitalize()
        yield {"id": i + 1, "org_id": rng.choice(org_ids), "name": f"{topic[0]}-{topic[1]}-{i}",
               "kind": "table", "description": description, "schema": schema,
               "rows": int(10 ** rng.uniform(2, 8)), "sha256": f"{i:064x}", "license": _pick(rng, LICENCES),
               "visibility": _pick(rng, VISIBILITIES), "file_format": "csv",
               "created_at": created + timedelta(minutes=i)}


def _versions(rng: random.Random, count: int, datasets: list[dict]) -> list[dict]:
    opened = rng.sample(datasets, int(len(datasets) * 0.7))
    owners = sorted(rng.choice(opened)["id"] for _ in range(count))
    by_id = {d["id"]: d for d in datasets}
    found, seen = [], {}
    published = datetime(2026, 6, 1, tzinfo=UTC)
    for i, dataset_id in enumerate(owners):
        seen[dataset_id] = seen.get(dataset_id, 0) + 1
        d = by_id[dataset_id]
        withdrawn = rng.random() < 0.05
        found.append({
            "id": i + 1, "dataset_id": dataset_id, "version": f"{seen[dataset_id]}.0", "sha256": f"{i:064x}",
            "table_sha256": d["sha256"], "size": d["rows"] * rng.randint(20, 200), "rows": d["rows"],
            "license": d["license"] if rng.random() < 0.9 else _pick(rng, LICENCES),
            "datasheet": {"motivation": f"shared for {d['name'].split('-')[0]} research",
                          "maintenance": rng.choice(WORDS)},
            "predecessor_id": None, "published_seq": i + 1,
            "published_at": published + timedelta(seconds=i),
            "withdrawn_reason": "superseded" if withdrawn else None,
            "withdrawn_at": published + timedelta(days=1) if withdrawn else None})
    return found


def build(url: str, versions: int, seed: int) -> dict[str, Any]:
    """Fill the (migrated, empty of datasets) hub database ``url`` in bulk; what was written."""
    from sqlalchemy import insert

    from consortium.hub.db.catalogue_models import CatalogueEntry, CatalogueTerm, entry_for
    from consortium.hub.db.models import Dataset, Org
    from consortium.hub.db.open_data_models import OpenDataVersion
    from consortium.hub.db.session import make_engine

    rng = random.Random(seed)
    engine = make_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(insert(Org), [{"id": 1000 + i, "name": f"org{i:02d}", "display_name": f"Org {i}",
                                    "status": "admitted"} for i in range(ORGS)])
    org_ids = [1000 + i for i in range(ORGS)]
    datasets = list(_datasets(rng, max(1, versions // 2), org_ids))
    rows = _versions(rng, versions, datasets)
    latest: dict[int, dict] = {}
    for v in rows:
        if v["withdrawn_at"] is None:
            latest[v["dataset_id"]] = v
    entries, terms = [], []
    for d in datasets:
        entry, words = entry_for(d, latest.get(d["id"]))
        entries.append(entry)
        terms += [{"term": t, "dataset_id": d["id"]} for t in words]
    for table, values in ((Dataset, datasets), (OpenDataVersion, rows), (CatalogueEntry, entries),
                          (CatalogueTerm, terms)):
        for start in range(0, len(values), BATCH):
            with engine.begin() as conn:
                conn.execute(insert(table), values[start:start + BATCH])
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for table in ("orgs", "datasets", "open_data_versions"):
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"(SELECT max(id) FROM {table}))")
        # What autovacuum does after a bulk load: statistics and the visibility map (index-only scans)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return {"orgs": ORGS, "datasets": len(datasets), "versions": len(rows), "open_datasets": len(latest),
            "terms": len(terms), "build_s": time.perf_counter() - started}


def queries(rng: random.Random, count: int) -> list[tuple[bool, dict[str, Any]]]:
    """``count`` seeded searches: (anonymous?, query parameters), a mix of every filter and sort."""
    licence_ids = ("CC-BY-4.0", "CC0-1.0", "MIT", "Apache-2.0", "ODbL-1.0", "CC-BY-SA-4.0")
    makers = [
        lambda: {"q": rng.choice(TOPICS)},
        lambda: {"q": f"{rng.choice(TOPICS)} {rng.choice(WORDS)}"},
        lambda: {"q": rng.choice(TOPICS)[:4], "open": True},
        lambda: {"license": rng.choice(licence_ids)},
        lambda: {"license": rng.choice(licence_ids), "task": rng.choice(("classification", "regression"))},
        lambda: {"task": rng.choice(("classification", "regression", "unsupervised")), "open": True,
                 "sort": "published"},
        lambda: {"owner": f"org{rng.randrange(ORGS):02d}", "sort": "name"},
        lambda: {"min_rows": 10 ** rng.randint(3, 6), "max_rows": 10 ** 7, "sort": "rows"},
        lambda: {"min_bytes": 10 ** rng.randint(5, 9), "sort": "bytes", "open": True},
        lambda: {"open": False, "q": rng.choice(COLUMNS)},
        lambda: {"q": rng.choice(TOPICS), "license": rng.choice(licence_ids), "task": "classification",
                 "open": True, "min_rows": 1000},
        lambda: {"sort": rng.choice(("newest", "name")), "offset": rng.randrange(0, 2000, 50)},
    ]
    return [(rng.random() < 0.25, rng.choice(makers)()) for _ in range(count)]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``); None where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_searches(url: str, token: str, mix: list[tuple[bool, dict[str, Any]]],
                  hub_pid: int | None = None) -> dict[str, float]:
    """Send each search of ``mix`` in turn (after a short untimed warm-up); p50/p95/p99 in ms, how many
    results the searches found in all, the hub process's mean CPU time per search (what a search costs
    the hub whatever else the machine runs; None where ``/proc`` is not readable), and as a baseline as many
    ``GET /api/health`` requests (the same hub and clients, no database: what the machine adds)."""
    import httpx

    member = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, trust_env=False)
    anonymous = httpx.Client(base_url=url, trust_env=False)
    with member, anonymous:
        for anon, params in mix[:10]:
            (anonymous if anon else member).get("/api/catalogue", params=params).raise_for_status()
        times, found = [], 0
        cpu_before = _cpu_s(hub_pid)
        for anon, params in mix:
            start = time.perf_counter()
            response = (anonymous if anon else member).get("/api/catalogue", params=params)
            times.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
            found += len(response.json()["items"])
        cpu_after = _cpu_s(hub_pid)
        baseline = []
        for anon, _ in mix:
            start = time.perf_counter()
            (anonymous if anon else member).get("/api/health").raise_for_status()
            baseline.append((time.perf_counter() - start) * 1000)
    cpu = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) * 1000 / len(mix)
    return {"p50_ms": statistics.median(times), "p95_ms": _quantile(times, 0.95),
            "p99_ms": _quantile(times, 0.99), "max_ms": max(times), "results": found, "hub_cpu_ms": cpu,
            "health_p50_ms": statistics.median(baseline), "health_p95_ms": _quantile(baseline, 0.95)}


def run_backend(db_url: str | None, versions: int, requests: int, repeats: int, seed: int,
                workdir: Path) -> dict[str, Any]:
    """Start a hub on ``db_url`` (None: SQLite in ``workdir``), fill it, time the searches ``repeats``
    times; the medians and what was built."""
    from consortium.launch import start_hub

    url = db_url or f"sqlite:///{workdir / 'hub.db'}"
    hub = start_hub(workdir / "hub", db_url=url, admin_token=ADMIN_TOKEN)
    try:
        built = build(url, versions, seed)
        with hub.client() as admin:
            token = admin.create_user("bench-steward", "steward", "org00")["token"]
        mix = queries(random.Random(seed + 1), requests)
        runs = [time_searches(hub.url, token, mix, hub.popen.pid) for _ in range(repeats)]
    finally:
        hub.stop()
    keys = ("p50_ms", "p95_ms", "p99_ms", "max_ms", "hub_cpu_ms", "health_p50_ms", "health_p95_ms")
    medians = {key: None if any(run[key] is None for run in runs)
               else statistics.median(run[key] for run in runs) for key in keys}
    return {**built, **medians, "runs": runs, "within_target": medians["p95_ms"] <= TARGET_P95_MS}


def run_catalogue_bench(versions: int = 100_000, requests: int = 300, repeats: int = 3, seed: int = 0,
                        pg_url: str | None = None) -> dict[str, Any]:
    """The bench on SQLite and, with ``pg_url`` (an empty PostgreSQL database), on PostgreSQL too."""
    backends: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="consortium-catalogue-bench-") as scratch:
        backends["sqlite"] = run_backend(None, versions, requests, repeats, seed, Path(scratch) / "sqlite")
        if pg_url:
            backends["postgresql"] = run_backend(pg_url, versions, requests, repeats, seed,
                                                 Path(scratch) / "postgresql")
    return {"versions": versions, "requests": requests, "repeats": repeats, "seed": seed,
            "load_average": os.getloadavg(), "backends": backends, "target_p95_ms": TARGET_P95_MS}


def software(pg_url: str | None) -> dict[str, str]:
    """The versions that shape the numbers: this package, SQLAlchemy, SQLite and (measured) PostgreSQL."""
    import sqlite3

    import sqlalchemy

    from consortium import __version__

    found = {"consortium": __version__, "SQLAlchemy": sqlalchemy.__version__, "SQLite": sqlite3.sqlite_version}
    if pg_url:
        from sqlalchemy import create_engine, text

        engine = create_engine(pg_url)
        with engine.connect() as conn:
            found["PostgreSQL"] = conn.execute(text("SHOW server_version")).scalar_one().split()[0]
        engine.dispose()
    return found


def report_markdown(result: dict[str, Any], machine: dict[str, Any], versions: dict[str, str]) -> str:
    load = result["load_average"]
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['python']}, {machine['date']}; "
        f"{', '.join(f'{k} {v}' for k, v in versions.items())}; load average at the end {load[0]:.1f} "
        "(a shared machine: other work stretches wall times).",
        f"A real hub process (uvicorn) on loopback; {result['versions']:,} open data versions over "
        f"{next(iter(result['backends'].values()))['datasets']:,} dataset cards (70% with versions, 5% of "
        f"versions withdrawn, {ORGS} orgs), seed {result['seed']}. {result['requests']} seeded searches "
        "(words, licence, task, owner, open, rows, bytes, sorts, pages; a quarter anonymous) per repetition, "
        f"timed from send to the whole answer; medians of {result['repeats']} repetitions.",
        "",
        "| database | build | p50 | p95 | p99 | max | hub CPU per search (mean) | baseline `GET /api/health` "
        "p50 / p95 | target p95 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, b in result["backends"].items():
        cpu = "n/a" if b["hub_cpu_ms"] is None else f"{b['hub_cpu_ms']:.1f} ms"
        lines.append(f"| {name} | {b['build_s']:.0f} s | {b['p50_ms']:.1f} ms | {b['p95_ms']:.1f} ms | "
                     f"{b['p99_ms']:.1f} ms | {b['max_ms']:.1f} ms | {cpu} | {b['health_p50_ms']:.1f} / "
                     f"{b['health_p95_ms']:.1f} ms | ≤ {TARGET_P95_MS:.0f} ms |")
    return "\n".join(lines)
