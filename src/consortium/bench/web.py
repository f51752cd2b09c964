"""`consortium bench web`: server time of each web page on a big hub database.

The database is seeded through the hub's own code: orgs and users by :mod:`identity`, datasets and projects
as ORM rows with their run proposals from :func:`proposals.propose_run`, one finished run with its rounds,
tasks and model, and ledger entries from :func:`ledger.record_many` in batches (sealed and signed like any
other, so the ledger still verifies, which the bench checks). The pages are then requested in-process by a
logged-in steward whose org takes part in half the projects: the time from request to the whole answer,
p50 and p95 over ``requests`` requests per page, repeated ``repeats`` times (medians reported).
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consortium.protocol import Role, RoundMetrics, UserCreate

ADMIN_TOKEN = "csm_" + "b" * 40
ORGS = 20
RUN_ROUNDS = 20
LEDGER_BATCH = 2000
TARGET_P95_MS = 200.0
LICENCES = ("CC-BY-4.0", "MIT", "CC0-1.0", "Apache-2.0")
VISIBILITIES = ("public", "members", "private")
SCHEMA = {"features": [{"name": "px", "dtype": "float32", "shape": [64]}],
          "target": {"name": "label", "dtype": "int64"}}


@dataclass(frozen=True)
class Sizes:
    datasets: int = 1000
    projects: int = 200
    entries: int = 100_000


@dataclass(frozen=True)
class Seeded:
    token: str
    """The API token of the steward whose pages are timed."""
    pages: dict[str, str]
    """Page name -> path."""
    entries: int


def _round(number: int) -> dict[str, Any]:
    return RoundMetrics(
        round=number, participants=["org00", "org01", "org02"], dropped=[], train={"train_loss": 1 / number},
        federated_eval={"accuracy": 1 - 1 / (number + 1)},
        test={"accuracy": 1 - 1 / (number + 2), "loss": 1 / number}, params_sha256="ab" * 32,
        opened_at=1.7e9 + number, wall_s=0.2, max_fit_compute_s=0.1, max_eval_compute_s=0.1,
    ).model_dump(mode="json")


def seed(app: Any, sizes: Sizes, rng: random.Random) -> Seeded:
    """Fill the app's empty database (see the module's description); what to time and as whom."""
    from consortium.hub.db.models import Dataset, Model, Org, Project, ProjectDataset, Round, Run, Task
    from consortium.hub.services import identity, ledger, proposals
    from consortium.hub.services.identity import Principal

    admin = Principal("user", "admin", Role.admin, None, None)
    with app.state.hub.sessions() as session:
        orgs = [Org(name=f"org{i:02d}", display_name=f"Org {i}", status="admitted") for i in range(ORGS)]
        session.add_all(orgs)
        session.commit()
        tokens = [identity.create_user(session, admin, UserCreate(name=f"steward-{o.name}", role=Role.steward,
                                                                  org=o.name))[1] for o in orgs]
        datasets = [Dataset(org_id=orgs[i % ORGS].id, name=f"data-{i:05d}", schema=SCHEMA, rows=100 + i,
                            description=f"table {i} of {orgs[i % ORGS].name}: measurements, labels",
                            sha256=f"{i:064x}", license=LICENCES[i % len(LICENCES)],
                            visibility=VISIBILITIES[i % len(VISIBILITIES)], file_format="csv")
                    for i in range(sizes.datasets)]
        session.add_all(datasets)
        session.flush()
        by_org: dict[int, list[Dataset]] = {}
        for found in datasets:
            by_org.setdefault(found.org_id, []).append(found)
        names = {o.id: o.name for o in orgs}
        projects = []
        for i in range(sizes.projects):
            chosen_orgs = ([orgs[0]] if i % 2 == 0 else []) + rng.sample(orgs[1:], 2)
            chosen = [rng.choice(by_org[o.id]) for o in chosen_orgs if o.id in by_org]
            spec = {"name": f"project-{i:04d}", "task": f"classify table rows ({i})",
                    "algorithm": {"name": "classifier"}, "rounds": RUN_ROUNDS,
                    "datasets": [f"{names[d.org_id]}/{d.name}" for d in chosen]}
            project = Project(name=spec["name"], spec=spec, spec_hash=f"{i:064x}",
                              proposer=f"user:steward-{chosen_orgs[0].name}")
            session.add(project)
            session.flush()
            session.add_all([ProjectDataset(project_id=project.id, dataset_id=d.id) for d in chosen])
            proposals.propose_run(session, project, project.proposer)
            projects.append((project, chosen))
        session.commit()
        project, chosen = projects[0]
        run = Run(project_id=project.id, status="completed", current_round=RUN_ROUNDS,
                  params_sha256="ef" * 32, finished_at=datetime.now(UTC))
        session.add(run)
        session.flush()
        for number in range(1, RUN_ROUNDS + 1):
            row = Round(run_id=run.id, number=number, status="closed", metrics=_round(number))
            session.add(row)
            session.flush()
            session.add_all([Task(run_id=run.id, round_id=row.id, org_id=d.org_id, dataset_id=d.id,
                                  kind="fit", status="done", seed=number, deadline=datetime.now(UTC))
                             for d in chosen])
        weights = app.state.hub.blobs.put(b"weights")
        model = Model(run_id=run.id, project_id=project.id, params_sha256=weights, license="MIT", version=1,
                      card={"model": f"{project.name}/run-{run.id}", "license": "MIT"}, card_markdown="",
                      status="released", visibility="public", download_grant="everyone")
        session.add(model)
        session.commit()
        written = ledger.head(session).seq
        while written < sizes.entries:
            count = min(LEDGER_BATCH, sizes.entries - written)
            target = projects[rng.randrange(len(projects))][0].id
            events = [("round.completed", "hub",
                       {"run_id": run.id, "round": written + k, "note": rng.random()}) for k in range(count)]
            ledger.record_many(session, events, scope=ledger.project_scope(target))
            session.commit()
            written += count
        card = chosen[0]
        pages = {"overview": "/", "catalogue": "/catalogue", "dataset card": f"/datasets/org00/{card.name}",
                 "projects": "/projects", "project": f"/projects/{project.id}", "run": f"/runs/{run.id}",
                 "models": "/models", "members": "/members"}
        return Seeded(tokens[0], pages, written)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_pages(app: Any, seeded: Seeded, requests: int) -> dict[str, dict[str, float]]:
    """p50 and p95 (ms) of each page over ``requests`` requests (after one untimed warm-up request): wall
    time, and this process's CPU time (what the page costs, whatever else the machine runs)."""
    import re

    from starlette.testclient import TestClient

    client = TestClient(app, follow_redirects=False)
    form = client.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    logged = client.post("/login", data={"csrf": csrf, "token": seeded.token, "next": "/"})
    if logged.status_code != 303:
        raise RuntimeError(f"logging in failed: {logged.status_code} {logged.text[:200]}")
    found = {}
    for name, path in seeded.pages.items():
        if client.get(path).status_code != 200:
            raise RuntimeError(f"page {path} did not answer 200")
        times, cpu = [], []
        for _ in range(requests):
            start, start_cpu = time.perf_counter(), time.process_time()
            client.get(path)
            times.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
        found[name] = {"p50_ms": statistics.median(times), "p95_ms": _quantile(times, 0.95),
                       "cpu_p50_ms": statistics.median(cpu), "cpu_p95_ms": _quantile(cpu, 0.95)}
    return found


def run_web_bench(sizes: Sizes, requests: int = 50, repeats: int = 3, seed_value: int = 0) -> dict[str, Any]:
    """Seed a fresh SQLite hub, check its ledger verifies, then time every page ``repeats`` times."""
    from consortium.config import HubSettings
    from consortium.hub.app import create_app
    from consortium.ledger_audit import verify_from_db

    with tempfile.TemporaryDirectory(prefix="consortium-web-bench-") as scratch:
        url = f"sqlite:///{Path(scratch) / 'hub.db'}"
        app = create_app(HubSettings.from_args(url, Path(scratch) / "data", ADMIN_TOKEN))
        t0 = time.perf_counter()
        seeded = seed(app, sizes, random.Random(seed_value))
        seed_s = time.perf_counter() - t0
        report = verify_from_db(url)
        if not report.ok or report.checked != seeded.entries:
            raise RuntimeError(f"the seeded ledger did not verify: {report.reason}")
        runs = [time_pages(app, seeded, requests) for _ in range(repeats)]
    keys = ("p50_ms", "p95_ms", "cpu_p50_ms", "cpu_p95_ms")
    pages = {name: {key: statistics.median(run[name][key] for run in runs) for key in keys}
             for name in seeded.pages}
    return {"sizes": asdict(sizes), "entries": seeded.entries, "load_average": os.getloadavg(),
            "requests": requests, "repeats": repeats,
            "seed_s": seed_s, "paths": seeded.pages, "pages": pages,
            "within_target": all(p["p95_ms"] <= TARGET_P95_MS for p in pages.values())}


def report_markdown(result: dict[str, Any], machine: dict[str, Any]) -> str:
    s, load = result["sizes"], result["load_average"]
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['python']}, {machine['date']}; "
        "SQLite, pages requested in-process (no network) by a logged-in steward whose org is in half the "
        f"projects; load average at the end {load[0]:.1f} (other work on the machine stretches wall times, "
        "not CPU times).",
        f"Database: {s['datasets']:,} datasets, {s['projects']:,} projects (one finished {RUN_ROUNDS}-round "
        f"run with its model), {result['entries']:,} ledger entries (seeded in {result['seed_s']:.0f} s; the "
        "ledger verifies). Medians of "
        f"{result['repeats']} repetitions of {result['requests']} requests per page.",
        "",
        "| page | path | wall p50 | wall p95 | CPU p50 | CPU p95 | target p95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in result["pages"].items():
        lines.append(f"| {name} | `{result['paths'][name]}` | {f['p50_ms']:.1f} ms | {f['p95_ms']:.1f} ms "
                     f"| {f['cpu_p50_ms']:.1f} ms | {f['cpu_p95_ms']:.1f} ms | ≤ {TARGET_P95_MS:.0f} ms |")
    return "\n".join(lines)
