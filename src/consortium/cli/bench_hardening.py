"""The `consortium bench` commands of hub hardening (issue 18): many nodes, faults and coverage-guided fuzzing;
registered on the bench app by :func:`register`, beside the report writer every bench shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consortium.cli.common import console, err_console, fail

DEFAULT_SCALE_DBS = "sqlite,postgres"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the bench app."""
    app.command("scale")(bench_scale)
    app.command("atheris")(bench_atheris)
    app.command("faults")(bench_faults)


def write_report(report: dict, body: str, suite: str, json_path: Path | None, markdown: Path | None) -> None:
    """Print a bench's markdown section and write its JSON and BENCHMARKS.md section when asked."""
    import json

    from consortium.bench.report import update_benchmarks_md

    console.print(body)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    if markdown is not None:
        update_benchmarks_md(markdown, suite, body)
        console.print(f"section {suite} of {markdown} updated")


def bench_scale(
    nodes: Annotated[str, typer.Option(help="comma-separated node counts")] = "100,1000",
    db: Annotated[str, typer.Option(
        "--db", help="comma-separated databases: sqlite, postgres")] = DEFAULT_SCALE_DBS,
    rounds: Annotated[int, typer.Option(min=2, help="rounds per run")] = 5,
    repeats: Annotated[int, typer.Option(min=1, help="runs per size (medians reported)")] = 3,
    baseline: Annotated[int, typer.Option(min=0, help="node count measured first for the ratios (0: none)")] = 10,
    processes: Annotated[int, typer.Option(min=1, help="worker processes the nodes are spread over")] = 4,
    compute_ms: Annotated[float, typer.Option(min=0, help="simulated compute per task (ms)")] = 0.0,
    compute_spread_ms: Annotated[float, typer.Option(
        min=0, help="plus a seeded uniform draw in [0, this) ms per task, so that nodes finish one after another "
                    "(0: all at once, the hub's worst case)")] = 0.0,
    replicas: Annotated[int, typer.Option(
        min=1, help="hub replicas behind HAProxy (more than 1: PostgreSQL only)")] = 1,
    hub_cpus: Annotated[str | None, typer.Option(
        help="CPUs the hub processes and the proxy may use, e.g. 0-3 (taskset -c syntax; default: any)")] = None,
    worker_cpus: Annotated[str | None, typer.Option(
        help="CPUs the node workers may use, e.g. 4-15 (default: any)")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write results as JSON")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """A real hub against N lightweight node workers (signed HTTP, safetensors updates) on SQLite and PostgreSQL."""
    from consortium.bench.affinity import cpu_list
    from consortium.bench.report import machine_info
    from consortium.bench.scale import ScaleConfig, run_scale_bench
    from consortium.bench.scale_report import report_markdown

    try:
        sizes = [int(n) for n in nodes.split(",") if n.strip()]
    except ValueError:
        fail(f"--nodes: {nodes!r} is not a comma-separated list of node counts")
    dbs = [d.strip() for d in db.split(",") if d.strip()]
    if not sizes or min(sizes) < 1:
        fail("--nodes: give at least one node count, each >= 1")
    if not dbs or set(dbs) - {"sqlite", "postgres"}:
        fail(f"--db: {db!r}: use sqlite, postgres or both")
    if replicas > 1 and "sqlite" in dbs:
        if db != DEFAULT_SCALE_DBS:
            fail(f"--replicas {replicas}: hub replicas need PostgreSQL; use --db postgres")
        dbs = ["postgres"]
        err_console.print(f"--replicas {replicas}: measuring PostgreSQL only (replicas need it)")
    cpu_options = {"--hub-cpus": hub_cpus, "--worker-cpus": worker_cpus}

    def cpus(flag: str) -> tuple[int, ...] | None:
        try:
            return tuple(sorted(cpu_list(cpu_options[flag]))) if cpu_options[flag] is not None else None
        except ValueError as exc:
            fail(f"{flag}: {exc}")

    cfg = ScaleConfig(rounds=rounds, repeats=repeats, processes=processes, compute_ms=compute_ms,
                      compute_spread_ms=compute_spread_ms, replicas=replicas,
                      hub_cpus=cpus("--hub-cpus"), worker_cpus=cpus("--worker-cpus"))
    result = run_scale_bench(sizes, dbs, cfg, baseline or None, report=err_console.print)
    options = {"--processes": (processes, 4), "--compute-ms": (compute_ms, 0.0),
               "--compute-spread-ms": (compute_spread_ms, 0.0), "--replicas": (replicas, 1)}
    shown = [f"{flag} {value:g}" for flag, (value, default) in options.items() if value != default]
    shown += [f"{flag} {text}" for flag, text in cpu_options.items() if text is not None]
    command = " ".join([f"consortium bench scale --nodes {nodes} --db {db} --rounds {rounds} --repeats {repeats}"
                        f" --baseline {baseline}", *shown])
    write_report(result | {"machine": machine_info()}, report_markdown(result, machine_info(), command),
                 cfg.suite, json_path, markdown)

def bench_atheris(
    minutes: Annotated[float, typer.Option(min=0.02, help="fuzzing time per target")] = 10.0,
    target: Annotated[list[str] | None, typer.Option(help="a target (repeatable); default: every target")] = None,
    corpus: Annotated[Path, typer.Option(help="the corpus kept in the repo")] = Path("tests/fuzz_corpus"),
    workdir: Annotated[Path | None, typer.Option(help="keep found inputs and logs here")] = None,
    rss_limit_mb: Annotated[int, typer.Option(min=256, help="a target process over this is a finding")] = 2048,
    input_timeout: Annotated[int, typer.Option(min=1, help="seconds one input may take (else a hang)")] = 10,
    write_seeds: Annotated[bool, typer.Option("--write-seeds", help="only (re)write the seed files")] = False,
    merge_from: Annotated[Path | None, typer.Option(
        help="only add to the corpus the new-coverage inputs a run kept under this --workdir")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write results as JSON")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Coverage-guided fuzzing (atheris) of each parser of network bytes; crashes, hangs, OOMs are findings."""
    import importlib.util
    import tempfile

    from consortium.bench import atheris_bench
    from consortium.bench.fuzz_targets import TARGET_NAMES
    from consortium.bench.report import machine_info

    chosen = target or list(TARGET_NAMES)
    unknown = sorted(set(chosen) - set(TARGET_NAMES))
    if unknown:
        fail(f"--target: unknown target(s) {', '.join(unknown)}; use {', '.join(TARGET_NAMES)}")
    if write_seeds:
        console.print(f"{atheris_bench.write_seeds(corpus, chosen)} seed files written under {corpus}")
        return
    if importlib.util.find_spec("atheris") is None:
        fail("atheris is not installed: pip install 'consortium[dev]' (or pip install atheris)")
    if merge_from is not None:
        for name in chosen:
            added = atheris_bench.merge_corpus(name, corpus, [merge_from / name / "corpus"], merge_from / "merge")
            console.print(f"{name}: {added} inputs added to {corpus / name}")
        return
    with tempfile.TemporaryDirectory(prefix="consortium-atheris-") as scratch:
        runs = atheris_bench.run_atheris_bench(
            minutes, chosen, corpus, workdir or Path(scratch), rss_limit_mb, input_timeout,
            on_done=lambda r: err_console.print(f"{r.target}: {r.execs} executions, cov {r.edges}, {r.status}"))
    command = f"consortium bench atheris --minutes {minutes:g}" + "".join(f" --target {t}" for t in target or ())
    write_report(atheris_bench.report_dict(runs), atheris_bench.report_markdown(runs, command, machine_info()),
                  "atheris", json_path, markdown)
    if any(r.findings or r.error for r in runs):
        raise typer.Exit(1)


def bench_faults(
    kills: Annotated[int, typer.Option(min=0, help="hub SIGKILLs, one per run")] = 50,
    replica_kills: Annotated[int, typer.Option(
        min=0, help="SIGKILLs of the driving one of 2 hub replicas behind HAProxy (PostgreSQL, see --pg)")] = 0,
    seed: Annotated[int, typer.Option(help="seed of the drawn kill moments")] = 0,
    rounds: Annotated[int, typer.Option(min=2, help="rounds per run")] = 5,
    scenarios: Annotated[bool, typer.Option(
        help="also PostgreSQL restarted mid-run, nodes killed in each phase, a cutting proxy, a full disk")] = True,
    db: Annotated[str | None, typer.Option("--db", help="hub database URL for the hub kills (default: SQLite)")] = None,
    pg: Annotated[str | None, typer.Option(
        help="PostgreSQL admin URL for the replica kills and the restart scenario (a scratch database is made in "
             "it; the restart scenario restarts the cluster); default: $CONSORTIUM_TEST_PG or the local test one")]
        = None,
    workdir: Annotated[Path | None, typer.Option(help="where hub and orgs go (default: a temp dir)")] = None,
    max_minutes: Annotated[float | None, typer.Option(
        min=1, help="start no new hub kill after this long (the report says how many ran)")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write results as JSON")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Fault harness: hub SIGKILLs mid-run (same final params, ledger, blobs, rounds checked), kills of the
    driving replica, and the other faults; exits 1 when any run or check failed."""
    import tempfile

    from consortium.bench import fault_report
    from consortium.bench.replica_lab import haproxy_missing

    if replica_kills and haproxy_missing():
        fail("--replica-kills needs haproxy (apt-get install haproxy)")

    with tempfile.TemporaryDirectory(prefix="consortium-faults-") as scratch:
        report = fault_report.run_faults_bench(Path(workdir or scratch), kills=kills, seed=seed, rounds=rounds,
                                               scenarios=scenarios, db_url=db, pg_admin_url=pg, console=console,
                                               budget_s=max_minutes * 60 if max_minutes else None,
                                               replica_kills=replica_kills)
    command = (f"consortium bench faults --kills {kills} --seed {seed} --rounds {rounds}"
               + (f" --replica-kills {replica_kills}" if replica_kills else "")
               + ("" if scenarios else " --no-scenarios") + (" --db postgresql" if db else "")
               + (f" --max-minutes {max_minutes:g}" if max_minutes else ""))
    for suite, body in fault_report.sections(report, command):
        write_report(report, body, suite, json_path, markdown)
    if not fault_report.all_ok(report):
        raise typer.Exit(1)
