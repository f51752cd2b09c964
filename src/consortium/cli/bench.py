"""``consortium bench``: benchmarks whose results go to BENCHMARKS.md."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from consortium.cli import bench_hardening
from consortium.cli.bench_hardening import write_report as _write_report
from consortium.cli.common import console, err_console, fail

app = typer.Typer(no_args_is_help=True, help="Benchmarks (results go to BENCHMARKS.md).")


@app.command("deploy")
def bench_deploy(
    rounds: Annotated[int, typer.Option(help="rounds per repetition")] = 20,
    repeats: Annotated[int, typer.Option(help="repetitions (median of medians)")] = 3,
    json_path: Annotated[Path | None, typer.Option("--json", help="write results as JSON")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
    valuation: Annotated[bool, typer.Option("--valuation", help="also measure runs that value every round")] = False,
) -> None:
    """Round overhead of a real deployment: 3 node processes on loopback, digits MLP."""
    from consortium.bench.deploy import run_deploy_bench

    run_deploy_bench(rounds=rounds, repeats=repeats, json_path=json_path, markdown_path=markdown,
                     console=console, valuation=valuation)


@app.command("data")
def bench_data(
    size_gb: Annotated[float, typer.Option("--size-gb", min=0.000001, help="size of the generated table (GB)")] = 1.0,
    repeats: Annotated[int, typer.Option(min=1, help="repetitions (medians are reported)")] = 3,
    seed: Annotated[int, typer.Option(help="seed of the generated table")] = 0,
    db: Annotated[str | None, typer.Option("--db", help="a PostgreSQL URL whose server gets a fresh database "
                                                        "(default: SQLite)")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write results as JSON")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Open data over loopback: publish and download a generated table through a real hub (MB/s, the hub's
    and node's memory growth), against a raw httpx copy to a static server."""
    from consortium.bench import data_transfer

    result = data_transfer.run_data_bench(size_gb * 1000, repeats, seed, db, say=err_console.print)
    command = f"consortium bench data --size-gb {size_gb:g} --repeats {repeats}" + (" --db postgresql" if db else "")
    _write_report(result, data_transfer.report_markdown(result, command), "data", json_path, markdown)


def _shown_url(url: str) -> str:
    """A database URL as a report may print it: its password, if any, masked."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command("fuzz")
def bench_fuzz(
    calls: Annotated[int, typer.Option(min=1, help="generated requests in all")] = 10_000,
    seed: Annotated[int, typer.Option(help="seed of the generated requests")] = 0,
    db: Annotated[str | None, typer.Option("--db", help="hub database URL (default: SQLite)")] = None,
    replicas: Annotated[int, typer.Option(
        min=1, help="hub replicas behind HAProxy, fuzzed through the proxy (more than 1: PostgreSQL, a scratch "
                    "database unless --db names one)")] = 1,
    workdir: Annotated[Path | None, typer.Option(help="where hub and orgs go (default: a temp dir)")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the counts and failures")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Schemathesis over a real hub's whole API as each kind of caller: counts 5xx and schema violations."""
    import contextlib
    import tempfile

    from consortium.bench import fuzz
    from consortium.bench.pg_scratch import scratch_database
    from consortium.bench.report import machine_info
    from consortium.bench.scale import PG_ADMIN_URL

    if replicas > 1 and db is not None and not db.startswith("postgresql"):
        fail(f"--replicas {replicas}: hub replicas need PostgreSQL; --db {db!r} is not a postgresql URL")
    given_db = db
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="consortium-fuzz-"))
        if replicas > 1 and db is None:
            db = stack.enter_context(scratch_database(PG_ADMIN_URL, "consortium_fuzz"))
        report = fuzz.run_fuzz_bench(calls, seed, db, workdir or Path(scratch), err_console, replicas)
    command = (f"consortium bench fuzz --calls {calls} --seed {seed}"
               + (f" --db {_shown_url(given_db)}" if given_db else "")
               + (f" --replicas {replicas}" if replicas > 1 else ""))
    where = ("PostgreSQL" if db else "SQLite") + (f", {replicas} replicas behind HAProxy" if replicas > 1 else "")
    body = fuzz.report_markdown(report, command, machine_info(), where)
    _write_report(fuzz.report_dict(report), body, "fuzz" + ("-replicas" if replicas > 1 else ""), json_path,
                  markdown)
    for failure in report.failures:
        err_console.print(failure, markup=False)
    if report.server_errors or report.violations:
        raise typer.Exit(1)


@app.command("ledger")
def bench_ledger(
    rate: Annotated[float, typer.Option(min=1, help="paced appends per second")] = 100.0,
    seconds: Annotated[float, typer.Option(min=1, help="seconds of paced appends")] = 10.0,
    entries: Annotated[int, typer.Option(
        min=10, help="entries in the ledger whose full verify is timed")] = 10**6,
    json_path: Annotated[Path | None, typer.Option("--json", help="write results as JSON")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Signed appends' latency (p50/p99, paced, SQLite) and a full verify of a big signed ledger."""
    from consortium.bench import ledger
    from consortium.bench.report import machine_info

    result = ledger.run_ledger_bench(rate, seconds, entries)
    _write_report(result, ledger.report_markdown(result, machine_info()), "ledger", json_path, markdown)


@app.command("web")
def bench_web(
    datasets: Annotated[int, typer.Option(min=1, help="datasets in the seeded hub")] = 1000,
    projects: Annotated[int, typer.Option(min=1, help="projects in the seeded hub")] = 200,
    entries: Annotated[int, typer.Option(min=100, help="ledger entries in the seeded hub")] = 100_000,
    requests: Annotated[int, typer.Option(min=1, help="timed requests per page")] = 50,
    repeats: Annotated[int, typer.Option(min=1, help="repetitions (medians are reported)")] = 3,
    json_path: Annotated[Path | None, typer.Option("--json", help="write results as JSON")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Server time (p50/p95) of each web page on a hub with many datasets, projects and ledger entries."""
    from consortium.bench import web
    from consortium.bench.report import machine_info

    result = web.run_web_bench(web.Sizes(datasets, projects, entries), requests=requests, repeats=repeats)
    _write_report(result, web.report_markdown(result, machine_info()), "web", json_path, markdown)


@app.command("catalogue")
def bench_catalogue(
    versions: Annotated[int, typer.Option(min=10, help="open data versions in the seeded hub")] = 100_000,
    requests: Annotated[int, typer.Option(min=10, help="timed searches per repetition")] = 300,
    repeats: Annotated[int, typer.Option(min=1, help="repetitions (medians are reported)")] = 3,
    seed: Annotated[int, typer.Option(help="seed of the data and the searches")] = 0,
    pg: Annotated[str | None, typer.Option("--pg", help=(
        "an empty PostgreSQL database URL to measure too (postgresql+psycopg://...)"))] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write results as JSON")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Catalogue search latency (p50/p95/p99 over HTTP to a hub process) over many dataset versions."""
    from consortium.bench import catalogue_search
    from consortium.bench.report import machine_info

    result = catalogue_search.run_catalogue_bench(versions, requests, repeats, seed, pg)
    body = catalogue_search.report_markdown(result, machine_info(), catalogue_search.software(pg))
    _write_report(result, body, "catalogue", json_path, markdown)


@app.command("sim")
def bench_sim(
    clients: Annotated[str, typer.Option(help="comma-separated N values")] = "10,100,1000",
    engines: Annotated[str, typer.Option(help="comma-separated engines")] = "vectorized,loop,ray",
    repeats: Annotated[int, typer.Option(help="repetitions (medians are reported)")] = 3,
    rounds: Annotated[int, typer.Option(help="rounds per run")] = 10,
    flower_python: Annotated[str | None, typer.Option(help="python of a venv with flwr[simulation]")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write one record per engine and N")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Simulator engines vs Flower vs a centralized epoch on the reference workload (steady s/round, memory)."""
    from consortium.bench.sim import run_sim_bench

    try:
        sizes = [int(n) for n in clients.split(",") if n.strip()]
    except ValueError:
        fail(f"--clients: {clients!r} is not a comma-separated list of integers")
    chosen = [e.strip() for e in engines.split(",") if e.strip()]
    unknown = sorted(set(chosen) - {"vectorized", "loop", "ray"})
    if unknown:
        fail(f"--engines: unknown engine(s) {', '.join(unknown)}; use vectorized, loop, ray")
    try:
        run_sim_bench(sizes, chosen, repeats=repeats, rounds=rounds, flower_python=flower_python,
                      json_path=json_path, markdown_path=markdown, console=console)
    except FileNotFoundError as exc:
        fail(str(exc))


@app.command("secagg")
def bench_secagg(
    clients: Annotated[int, typer.Option(min=2, help="clients in the round")] = 20,
    threshold: Annotated[int, typer.Option(min=2, help="SecAgg threshold t")] = 14,
    dropouts: Annotated[str, typer.Option(help="comma-separated d: clients dropped before the masked input")] = "3,6",
    repeats: Annotated[int, typer.Option(min=1, help="repetitions (medians are reported)")] = 3,
    rounds: Annotated[int, typer.Option(min=0, help="also check this many random rounds sum exactly (1000)")] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="write results as JSON")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """A round with SecAgg+ against a plain round (hub decode + FedAvg) on a 100k-parameter update."""
    from consortium.bench import secagg
    from consortium.bench.report import machine_info

    try:
        drops = tuple(int(d) for d in dropouts.split(",") if d.strip())
    except ValueError:
        fail(f"--dropouts: {dropouts!r} is not a comma-separated list of integers")
    if any(not 0 <= d <= clients - threshold for d in drops):
        fail(f"--dropouts: each d must lie in [0, {clients - threshold}] so that t = {threshold} clients remain")
    result = secagg.run_secagg_bench(clients, threshold, drops, repeats, rounds)
    command = (f"consortium bench secagg --clients {clients} --threshold {threshold} --dropouts {dropouts} "
               f"--repeats {repeats}" + (f" --rounds {rounds}" if rounds else ""))
    _write_report(result, secagg.report_markdown(result, machine_info(), command), "secagg", json_path, markdown)


def _floats(option: str, text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        fail(f"{option}: {text!r} is not a comma-separated list of numbers")


@app.command("privacy")
def bench_privacy(
    spec_path: Annotated[Path, typer.Option("--spec", help="classifier spec (a privacy block in it is kept)")] = Path(
        "examples/classifier-digits.json"),
    clients: Annotated[str, typer.Option(help="comma-separated N")] = "10,1000",
    epsilons: Annotated[str, typer.Option(help="comma-separated target epsilons (no DP is always run)")] = "1,4,8",
    seeds: Annotated[int, typer.Option(min=1, help="seeds per configuration")] = 3,
    rounds: Annotated[int | None, typer.Option(min=1, help="override the spec's rounds")] = None,
    audit: Annotated[bool, typer.Option("--audit", help="also run the one-run DP audit")] = False,
    audit_epsilons: Annotated[str, typer.Option(help="comma-separated audit epsilons (and no DP)")] = "1,2,4",
    audit_seeds: Annotated[int, typer.Option(min=1, help="audit seeds per epsilon")] = 5,
    audit_clients: Annotated[int, typer.Option(min=1, help="N of the audited runs")] = 10,
    audit_rounds: Annotated[int | None, typer.Option(min=1, help="rounds of the audited runs")] = None,
    canaries: Annotated[int, typer.Option(min=2, help="audit canaries m")] = 1000,
    guesses: Annotated[int, typer.Option(min=1, help="audit guesses k per side")] = 100,
    json_path: Annotated[Path | None, typer.Option("--json", help="write results as JSON")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Accuracy and time per round of the digits classifier with DP at several epsilon, vectorised engine."""
    import torch

    from consortium.bench.privacy import BenchConfig, report_markdown, run_privacy_bench
    from consortium.bench.report import machine_info
    from consortium.fl.core import FLError

    torch.set_num_threads(1)
    try:
        config = BenchConfig(tuple(int(n) for n in _floats("--clients", clients)), _floats("--epsilons", epsilons),
                             seeds, rounds, audit, _floats("--audit-epsilons", audit_epsilons), audit_seeds,
                             audit_clients, audit_rounds, canaries, guesses)
        result = run_privacy_bench(spec_path, config, lambda m: err_console.print(m))
    except (FLError, OSError, ValueError) as exc:
        fail(str(exc))
    command = (f"consortium bench privacy --spec {spec_path} --clients {clients} --epsilons {epsilons} "
               f"--seeds {seeds}" + (f" --rounds {rounds}" if rounds else ""))
    if audit:
        command += (f" --audit --audit-epsilons {audit_epsilons} --audit-seeds {audit_seeds} --audit-clients "
                    f"{audit_clients} --canaries {canaries} --guesses {guesses}"
                    + (f" --audit-rounds {audit_rounds}" if audit_rounds else ""))
    _write_report(result, report_markdown(result, machine_info(), command), "privacy", json_path, markdown)


def _spec_bench(suite: str, run: Callable[[], dict], markdown_of: Callable[[dict, str], str], spec_path: Path,
                rounds: int | None, json_path: Path | None, markdown: Path | None) -> None:
    """Run a bench driven by one spec file on one thread and report it (the gan and rl suites)."""
    import torch

    from consortium.fl.core import FLError

    torch.set_num_threads(1)
    try:
        report = run()
    except FLError as exc:
        fail(str(exc))
    command = f"consortium bench {suite} {spec_path}" + (f" --rounds {rounds}" if rounds else "")
    _write_report(report, markdown_of(report, command), suite, json_path, markdown)


@app.command("gan")
def bench_gan(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="GAN spec with a simulation block")] = Path(
        "examples/gan-digits.json"),
    rounds: Annotated[int | None, typer.Option(help="override the spec's rounds")] = None,
    samples: Annotated[Path | None, typer.Option(help="directory for each generator's sample grid PNG")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write every generator's scores")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Federated conditional GAN across the spec's orgs vs each org alone: conditioning accuracy, Fréchet."""
    from consortium.bench import gan

    _spec_bench("gan", lambda: gan.run_gan_bench(spec_path, rounds, samples), gan.markdown, spec_path, rounds,
                json_path, markdown)


@app.command("rl")
def bench_rl(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="RL spec with an env: simulation")] = Path(
        "examples/rl-cartpole.json"),
    rounds: Annotated[int | None, typer.Option(help="override the spec's rounds")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write every policy's scores")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Federated PPO across CartPole physics variants vs each variant alone: mean return on CartPole-v1."""
    from consortium.bench import rl

    _spec_bench("rl", lambda: rl.run_rl_bench(spec_path, rounds), rl.markdown, spec_path, rounds, json_path,
                markdown)


@app.command("gpu")
def bench_gpu(
    device: Annotated[str, typer.Option(help="cuda (or cpu, to try the suite)")] = "cuda",
    digits_clients: Annotated[str, typer.Option(help="comma-separated N for the reference digits workload")] = (
        "1000,10000"),
    cnn_clients: Annotated[str, typer.Option(help="comma-separated N for the CIFAR-shaped CNN")] = "1000,10000",
    samples_per_client: Annotated[int, typer.Option(help="CNN training rows per client")] = 50,
    rounds: Annotated[int, typer.Option(help="rounds per simulation")] = 5,
    json_path: Annotated[Path | None, typer.Option("--json", help="write every configuration's figures")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """The vectorised engine on a GPU vs a centralized epoch on the same GPU (digits workload, CIFAR-sized CNN)."""
    from consortium.bench import gpu
    from consortium.fl.core import FLError

    def sizes(option: str, text: str) -> list[int]:
        try:
            return [int(n) for n in text.split(",") if n.strip()]
        except ValueError:
            fail(f"{option}: {text!r} is not a comma-separated list of integers")

    digits = sizes("--digits-clients", digits_clients)
    try:
        report = gpu.run_gpu_bench(
            device, digits, sizes("--cnn-clients", cnn_clients), samples_per_client, rounds,
            on_record=lambda r: console.print(
                f"{r.workload}: {r.steady_s_per_round:.4f} s/round, centralized epoch {r.centralized_epoch_s:.4f} s"
            ),
        )
    except FLError as exc:
        fail(str(exc))
    command = (f"consortium bench gpu --device {device} --digits-clients {digits_clients} --cnn-clients "
               f"{cnn_clients} --samples-per-client {samples_per_client} --rounds {rounds}")
    _write_report(report, gpu.markdown(report, command), "gpu", json_path, markdown)


@app.command("valuation")
def bench_valuation(
    orgs: Annotated[str, typer.Option(help="comma-separated org counts for the validity scenarios")] = "5,8",
    rounds: Annotated[int, typer.Option(min=1, help="rounds of each valued run")] = 5,
    seeds: Annotated[int, typer.Option(min=1, help="seeds per configuration (medians reported)")] = 3,
    cost_orgs: Annotated[str, typer.Option(help="comma-separated org counts for the cost per round")] = "10,100",
    json_path: Annotated[Path | None, typer.Option("--json", help="write results as JSON")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """GTG-Shapley and leave-one-out against exact Shapley on digits, free riders, and the cost per round."""
    from consortium.bench.report import machine_info
    from consortium.bench.valuation import ValuationConfig, report_markdown, run_valuation_bench

    config = ValuationConfig(tuple(int(n) for n in _floats("--orgs", orgs)), rounds, seeds,
                             tuple(int(n) for n in _floats("--cost-orgs", cost_orgs)))
    result = run_valuation_bench(config, lambda m: err_console.print(m))
    command = f"consortium bench valuation --orgs {orgs} --rounds {rounds} --seeds {seeds} --cost-orgs {cost_orgs}"
    _write_report(result, report_markdown(result, machine_info(), command), "valuation", json_path, markdown)


bench_hardening.register(app)
