"""`consortium bench fuzz`: schemathesis over a real hub's whole API, as every kind of caller.

A hub process is started and given a small consortium (two enrolled orgs with datasets, users of every role,
a project and a released model), so that generated ids meet real rows. Then schemathesis generates requests
from the hub's own ``/openapi.json`` (valid and invalid data, seeded) and sends them as an admin, a steward, a
researcher of an org, a researcher of none, an org's node (each request signed over its final bytes) and an
anonymous caller. Each answer must be neither a 5xx nor outside what the description documents: status code,
content type, headers and body schema.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from consortium import crypto
from consortium.launch import HubProcess
from consortium.codec import encode_update
from consortium.protocol import TaskResult, UpdateMeta
from consortium.scenario import ORGS, DigitsConsortium, approve_as, digits_spec, provision_digits

KINDS = ("admin", "steward", "researcher", "researcher-no-org", "org", "anonymous")
MAX_WAIT_S = 0.05
"""Long polls (``wait``) are cut to this: the fuzzer looks for wrong answers, not for slow ones."""


class SignedAuth(requests.auth.AuthBase):
    """Signs the request exactly as it goes out (method, path and query, body): what the hub checks."""

    def __init__(self, identity: crypto.OrgIdentity) -> None:
        self.identity = identity

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        request.headers.update(
            crypto.sign_request(self.identity, request.method or "GET", request.path_url, body, time.time())
        )
        return request


@dataclass
class Caller:
    kind: str
    session: requests.Session


@dataclass
class KindStats:
    calls: int = 0
    server_errors: int = 0
    violations: int = 0
    transport_errors: int = 0
    statuses: Counter = field(default_factory=Counter)
    answers: Counter = field(default_factory=Counter)
    """(operation, status) -> count"""


@dataclass
class FuzzReport:
    calls: int
    seconds: float
    seed: int
    kinds: dict[str, KindStats]
    operations: int
    failures: list[str]
    """The first few failures, each with the request that caused it."""
    kinds_of_failure: Counter = field(default_factory=Counter)
    """How often each (check code, operation, status) failed."""

    @property
    def server_errors(self) -> int:
        return sum(s.server_errors for s in self.kinds.values())

    @property
    def violations(self) -> int:
        return sum(s.violations for s in self.kinds.values())


def _released_model(consortium: DigitsConsortium, org: str) -> None:
    """Run a one-round project to completion, playing ``org``'s node, so that a model (id 1) exists."""
    spec = digits_spec("fuzz-released", [org], rounds=1, min_nodes=1, round_timeout=600)
    with consortium.hub.client() as admin:
        project = admin.create_project(spec)
        admin.put_test_set(project["id"], consortium.test_set_bytes())
        approve_as(consortium.org_dirs[org], consortium.hub.url, project)
        run = admin.start_run(project["id"])
        with consortium.org_client(org) as node:
            delivery = node.next_task(wait=30)
            if delivery is None or delivery[1] is None:
                raise RuntimeError("the fuzz set-up's run handed out no task with params")
            task, params = delivery
            update = encode_update({k: v + 0.01 for k, v in params.items()},
                                   UpdateMeta(num_examples=10, compute_s=0.01))
            answer = node.post_update(task.id, update, wait=30, have=task.params_sha256)
            if answer is None:
                raise RuntimeError("the fuzz set-up's run asked for no evaluation")
            node.post_result(answer[0].id, TaskResult(num_examples=5, metrics={"accuracy": 0.5}, compute_s=0))
        deadline = time.monotonic() + 60
        while admin.run(run["id"])["status"] == "running" and time.monotonic() < deadline:
            admin.progress(run["id"], after_round=1, wait=2)
        if admin.run(run["id"])["model_id"] is None:
            raise RuntimeError(f"the fuzz set-up's run did not release a model: {admin.run(run['id'])}")
        admin.create_project(digits_spec("fuzz-proposed", list(consortium.org_dirs), rounds=2))


def prepare_callers(hub: HubProcess, workdir: Path) -> list[Caller]:
    """Give ``hub`` a small consortium and return one caller of each kind in :data:`KINDS`."""
    consortium = provision_digits(hub, workdir, ORGS[:2])
    _released_model(consortium, ORGS[0])
    tokens = {"admin": hub.admin_token}
    with hub.client() as admin:
        tokens["steward"] = admin.create_user("fuzz-steward", "steward", org=ORGS[0])["token"]
        tokens["researcher"] = admin.create_user("fuzz-researcher", "researcher", org=ORGS[1])["token"]
        tokens["researcher-no-org"] = admin.create_user("fuzz-loner", "researcher")["token"]
    callers = []
    for kind in KINDS:
        session = requests.Session()
        session.trust_env = False
        if kind in tokens:
            session.headers["Authorization"] = f"Bearer {tokens[kind]}"
        elif kind == "org":
            session.auth = SignedAuth(crypto.load_org_identity(consortium.org_dirs[ORGS[0]]))
        callers.append(Caller(kind, session))
    return callers


def _short_wait(case: Any) -> None:
    query = case.query or {}
    try:
        if float(query.get("wait", 0)) > MAX_WAIT_S:
            query["wait"] = MAX_WAIT_S
    except (TypeError, ValueError):
        pass  # not a number: the hub answers 422


def _draw(strategy: Any, examples: int, seed: int, use: Callable[[Any], None]) -> bool:
    """Hand ``use`` up to ``examples`` cases drawn from ``strategy`` by Hypothesis, seeded (no shrinking:
    ``use`` records what it finds and never raises); False when the strategy can draw nothing (invalid data
    for an operation without parameters)."""
    import hypothesis

    @hypothesis.seed(seed)
    @hypothesis.settings(max_examples=examples, database=None, deadline=None, phases=[hypothesis.Phase.generate],
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(strategy)
    def draw(case: Any) -> None:
        use(case)

    try:
        draw()
    except hypothesis.errors.Unsatisfiable:
        return False
    return True


def fuzz(
    base_url: str,
    callers: Iterable[Caller],
    calls: int,
    seed: int = 0,
    max_failures: int = 20,
    progress: Callable[[int], None] | None = None,
) -> FuzzReport:
    """Send ``calls`` generated requests spread evenly over every (operation, valid or invalid data, caller),
    each at least once when ``calls`` allows; each answer is checked for 5xx and for conformance to the hub's
    OpenAPI description."""
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_headers_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    callers = list(callers)
    # Callers innermost: however few the calls, each kind of caller gets its share of every operation.
    units = [(caller, op, op.as_strategy(generation_mode=mode)) for op in operations for mode in modes
             for caller in callers]
    kinds = {caller.kind: KindStats() for caller in callers}
    failures: list[str] = []
    distinct: Counter = Counter()
    sent = 0
    started = time.perf_counter()

    def send(caller: Caller, case: Any) -> None:
        nonlocal sent
        if sent >= calls:
            return
        _short_wait(case)
        stats = kinds[caller.kind]
        sent += 1
        stats.calls += 1
        if progress is not None:
            progress(sent)
        try:
            response = case.call(base_url=base_url, session=caller.session, timeout=30)
        except requests.RequestException as exc:
            stats.transport_errors += 1
            failures.append(f"{caller.kind} {case.method} {case.formatted_path}: {type(exc).__name__}: {exc}")
            return
        stats.statuses[response.status_code] += 1
        stats.answers[case.operation.label, response.status_code] += 1
        if response.status_code >= 500:
            stats.server_errors += 1
        try:
            case.validate_response(response, checks=checks,
                                   transport_kwargs={"base_url": base_url, "session": caller.session})
        except FailureGroup as group:
            if any(f.code != "ST101" for f in group.exceptions):  # ST101: the 5xx, counted above
                stats.violations += 1
            for failure in group.exceptions:
                distinct[f"{failure.code} {case.operation.label} -> {response.status_code}"] += 1
            if len(failures) < max_failures:
                failures.append(f"{caller.kind}: {str(group)[:4000]}")

    round_ = 0
    while sent < calls and units:
        per_unit = max(1, (calls - sent) // len(units))
        barren = set()
        for index, (caller, _op, strategy) in enumerate(units):
            if sent >= calls:
                break
            if not _draw(strategy, per_unit, seed + round_ * len(units) + index, lambda c, k=caller: send(k, c)):
                barren.add(index)
        units = [unit for index, unit in enumerate(units) if index not in barren]
        round_ += 1
    return FuzzReport(calls=sent, seconds=time.perf_counter() - started, seed=seed, kinds=kinds,
                      operations=len(operations), failures=failures, kinds_of_failure=distinct)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("schemathesis", "hypothesis", "fastapi", "starlette", "pydantic",
                                             "uvicorn")}


def report_markdown(report: FuzzReport, command: str, machine: dict[str, Any], db: str) -> str:
    """The BENCHMARKS.md section of a fuzz run (``db``: what the hub ran on, as the reader should see it)."""
    v = versions()
    lines = [
        f"Command: `{command}`",
        (f"Machine: {machine['cpu']} ({machine['cores']} cores, shared), {machine['python']}; hub on {db}; "
         f"measured {machine['date']}."),
        "Versions: " + ", ".join(f"{name} {value}" for name, value in v.items()) + ".",
        "",
        (f"{report.calls} generated calls (seed {report.seed}) over {report.operations} operations x "
         f"{len(report.kinds)} kinds of caller x valid and invalid data, in {report.seconds:.0f} s "
         f"({report.calls / report.seconds:.0f} calls/s). Checks: not a server error, status code, content "
         "type, headers and body schema as documented in the hub's `/openapi.json`."),
        "",
        "| caller | calls | 5xx | schema violations | transport errors | answers by status |",
        "|---|---|---|---|---|---|",
    ]
    for kind, stats in report.kinds.items():
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(stats.statuses.items()))
        lines.append(f"| {kind} | {stats.calls} | {stats.server_errors} | {stats.violations} | "
                     f"{stats.transport_errors} | {statuses} |")
    total_transport = sum(s.transport_errors for s in report.kinds.values())
    lines.append(f"| **all** | **{report.calls}** | **{report.server_errors}** | **{report.violations}** | "
                 f"{total_transport} | |")
    return "\n".join(lines)


def report_dict(report: FuzzReport) -> dict[str, Any]:
    """The report as JSON-ready data."""
    return {
        "calls": report.calls, "seconds": round(report.seconds, 2), "seed": report.seed,
        "operations": report.operations, "server_errors": report.server_errors,
        "violations": report.violations, "versions": versions(),
        "kinds": {kind: {"calls": s.calls, "server_errors": s.server_errors, "violations": s.violations,
                         "transport_errors": s.transport_errors,
                         "statuses": {str(code): n for code, n in sorted(s.statuses.items())}}
                  for kind, s in report.kinds.items()},
        "kinds_of_failure": dict(report.kinds_of_failure.most_common()),
        "failures": report.failures,
    }


def run_fuzz_bench(calls: int, seed: int, db_url: str | None, workdir: Path, console: Any,
                   replicas: int = 1) -> FuzzReport:
    """Start a hub in ``workdir`` (or ``replicas`` > 1 hub replicas on PostgreSQL ``db_url`` behind HAProxy,
    fuzzed through the proxy), give it a consortium and fuzz it with ``calls`` requests."""
    from rich.progress import Progress

    from consortium.bench.replica_lab import start_replicas
    from consortium.launch import Process, start_hub

    if replicas > 1 and not (db_url or "").startswith("postgresql"):
        raise ValueError(f"{replicas} hub replicas need a PostgreSQL database, not {db_url or 'SQLite'}")
    processes: list[Process]
    if replicas > 1:
        hubs, proxy, hub = start_replicas(db_url, workdir, replicas)
        processes = [proxy, *hubs]
    else:
        hub = start_hub(workdir / "hub", db_url=db_url)
        processes = [hub]
    try:
        callers = prepare_callers(hub, workdir)
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("fuzzing the hub's API", total=calls)
            return fuzz(hub.url, callers, calls, seed=seed, progress=lambda n: bar.update(task, completed=n))
    finally:
        for process in processes:
            process.stop()
