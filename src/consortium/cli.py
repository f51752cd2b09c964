"""The `consortium` command line: hub, node, org, user, dataset, project, run, model, ledger, demo, bench."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, help="consortium: federated learning across organisations.",
                  pretty_exceptions_enable=False)
org_app = typer.Typer(no_args_is_help=True, help="Organisation keys, admission and node enrolment.")
user_app = typer.Typer(no_args_is_help=True, help="Users and their API tokens (admin).")
dataset_app = typer.Typer(no_args_is_help=True, help="Register local datasets (only their cards reach the hub).")
environment_app = typer.Typer(no_args_is_help=True,
                              help="Register local RL environments (only their cards reach the hub).")
project_app = typer.Typer(no_args_is_help=True, help="Propose, inspect and approve projects.")
run_app = typer.Typer(no_args_is_help=True, help="Start and follow runs.")
model_app = typer.Typer(no_args_is_help=True, help="Download released models with their cards.")
ledger_app = typer.Typer(no_args_is_help=True, help="Audit the tamper-evident ledger.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (results go to BENCHMARKS.md).")
sim_app = typer.Typer(no_args_is_help=True, help="Simulate a project over many clients in one process or on Ray.")
for sub, name in [(org_app, "org"), (user_app, "user"), (dataset_app, "dataset"),
                  (environment_app, "environment"), (project_app, "project"),
                  (run_app, "run"), (model_app, "model"), (ledger_app, "ledger"), (bench_app, "bench"),
                  (sim_app, "sim")]:
    app.add_typer(sub, name=name)

console = Console()
err_console = Console(stderr=True)

HubOpt = Annotated[str, typer.Option("--hub", envvar="CONSORTIUM_HUB", help="hub base URL")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="CONSORTIUM_TOKEN", help="API token")]
OrgDirOpt = Annotated[Path, typer.Option("--org-dir", help="the org's local directory (keys, datasets)")]


def fail(message: str) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def _user_client(hub: str, token: str | None):
    from consortium.client import HubClient

    if not token:
        fail("--token (or CONSORTIUM_TOKEN) is required for this command")
    return HubClient(hub, token=token)


def _org_client(hub: str, org_dir: Path):
    from consortium.client import HubClient
    from consortium.crypto import load_org_identity

    try:
        identity = load_org_identity(org_dir)
    except (FileNotFoundError, ValueError) as exc:
        fail(f"--org-dir: {exc}")
    return HubClient(hub, identity=identity)


def _call(fn, *args: Any, **kwargs: Any) -> Any:
    """Run a hub call; a hub error becomes a clear CLI error instead of a traceback."""
    import httpx

    from consortium.client import HubError

    try:
        return fn(*args, **kwargs)
    except HubError as exc:
        fail(f"{exc.detail} (HTTP {exc.status_code})")
    except httpx.HTTPError as exc:
        fail(f"cannot reach the hub: {exc}")


def _print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


# ------------------------------------------------------------------------------------------------ processes


@app.command()
def hub(
    db: Annotated[str | None, typer.Option("--db", envvar="CONSORTIUM_DB",
                                           help="SQLAlchemy URL; default sqlite in --data-dir")] = None,
    port: Annotated[int, typer.Option(help="TCP port")] = 8700,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    data_dir: Annotated[Path, typer.Option("--data-dir", help="blob store and default database")] = Path("hub-data"),
    admin_token: Annotated[str | None, typer.Option("--admin-token", envvar="CONSORTIUM_ADMIN_TOKEN",
                                                    help="admin API token; generated into data-dir if absent")] = None,
    max_upload_mb: Annotated[float | None, typer.Option(
        "--max-upload-mb", help="body limit of update and test-set uploads (default 64)")] = None,
    max_json_kb: Annotated[float | None, typer.Option(
        "--max-json-kb", help="body limit of every other authenticated route (default 1024)")] = None,
    auth_failure_limit: Annotated[int | None, typer.Option(
        "--auth-failure-limit", min=1,
        help="failed token, signature or enrolment attempts per client address and window before 429 "
             "(default 20)")] = None,
    auth_failure_window: Annotated[float | None, typer.Option(
        "--auth-failure-window", min=0.001, help="seconds of that window (default 60)")] = None,
    ssl_certfile: Annotated[str | None, typer.Option(help="TLS certificate (deployment)")] = None,
    ssl_keyfile: Annotated[str | None, typer.Option(help="TLS key (deployment)")] = None,
) -> None:
    """Run the hub service (migrations are applied on start)."""
    import torch
    import uvicorn

    from consortium.config import HubSettings, torch_threads
    from consortium.hub.app import admin_token_path, create_app

    torch.set_num_threads(torch_threads())
    settings = HubSettings.from_args(db, data_dir, admin_token, max_upload_mb, max_json_kb=max_json_kb,
                                     auth_failure_limit=auth_failure_limit,
                                     auth_failure_window_s=auth_failure_window)
    application = create_app(settings)
    if not settings.admin_token:
        err_console.print(f"admin token: {admin_token_path(settings)}")
    uvicorn.run(application, host=host, port=port, log_level="warning", ssl_certfile=ssl_certfile,
                ssl_keyfile=ssl_keyfile, timeout_graceful_shutdown=3)


@app.command()
def node(
    hub: HubOpt,
    org_dir: OrgDirOpt,
    enrol_token: Annotated[str | None, typer.Option("--enrol-token", help="one-time token to enrol first")] = None,
    poll_wait: Annotated[float, typer.Option("--poll-wait", help="long-poll seconds")] = 25.0,
) -> None:
    """Run an organisation's node: long-poll the hub and train locally on approved tasks."""
    import logging

    import torch

    from consortium.config import torch_threads
    from consortium.node.agent import NodeAgent
    from consortium.node.environments import EnvironmentRegistry
    from consortium.node.policy import ApprovalBook, NodePolicy
    from consortium.node.store import LocalRegistry

    torch.set_num_threads(torch_threads())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if enrol_token:
        _enrol(hub, org_dir, enrol_token, "node")
    client = _org_client(hub, org_dir)
    registry = LocalRegistry(org_dir)
    policy = NodePolicy(org=client.identity.org, approvals=ApprovalBook(org_dir),
                        local_datasets={entry.name for entry in registry.all()},
                        local_environments={entry.name for entry in EnvironmentRegistry(org_dir).all()})
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    agent = NodeAgent(client, registry, policy, poll_wait=poll_wait,
                      on_task=lambda t, outcome: logging.info("task %s (%s, run %s, round %s): %s",
                                                              t.id, t.kind.value, t.run_id, t.round, outcome))
    logging.info("node of %s polling %s", client.identity.org, hub)
    try:
        agent.run_forever(threading.Event())
    except KeyboardInterrupt:
        logging.info("node of %s stopped", client.identity.org)


# ------------------------------------------------------------------------------------------------ orgs, users


def _enrol(hub: str, org_dir: Path, token: str, node_name: str) -> dict:
    from consortium.client import HubClient
    from consortium.crypto import load_org_identity
    from consortium.protocol import EnrolRequest

    identity = load_org_identity(org_dir)
    with HubClient(hub) as client:
        return _call(client.enrol, EnrolRequest(org=identity.org, token=token,
                                                public_key=identity.public_key_b64, node_name=node_name))


@org_app.command("init")
def org_init(
    name: Annotated[str, typer.Argument(help="organisation name (lowercase, digits, . _ -)")],
    dir: Annotated[Path, typer.Option("--dir", help="directory for the key pair")] = Path("."),
) -> None:
    """Make the organisation's Ed25519 key pair in a local directory."""
    from consortium.crypto import generate_org_key

    target = dir if dir.name == name else dir / name
    try:
        identity = generate_org_key(target, name)
    except FileExistsError as exc:
        fail(str(exc))
    console.print(f"org [bold]{name}[/] key {identity.key_id} in {target}")


@org_app.command("create")
def org_create(name: str, hub: HubOpt, token: TokenOpt = None) -> None:
    """Admit an organisation (admin)."""
    with _user_client(hub, token) as client:
        _print_json(_call(client.create_org, name))


@org_app.command("enrolment-token")
def org_enrolment_token(name: str, hub: HubOpt, token: TokenOpt = None) -> None:
    """Issue a one-time enrolment token for an organisation's node (admin)."""
    with _user_client(hub, token) as client:
        console.print(_call(client.enrolment_token, name))


@org_app.command("enrol")
def org_enrol(hub: HubOpt, org_dir: OrgDirOpt,
              enrol_token: Annotated[str, typer.Option("--enrol-token")],
              node_name: Annotated[str, typer.Option("--node-name")] = "node") -> None:
    """Register this org's public key with the hub using a one-time token."""
    _print_json(_enrol(hub, org_dir, enrol_token, node_name))


@user_app.command("create")
def user_create(name: str, hub: HubOpt,
                role: Annotated[str, typer.Option(help="admin, steward or researcher")],
                org: Annotated[str | None, typer.Option(help="organisation of a steward")] = None,
                token: TokenOpt = None) -> None:
    """Create a user and print its API token (shown once)."""
    with _user_client(hub, token) as client:
        _print_json(_call(client.create_user, name, role, org))


# ------------------------------------------------------------------------------------------------ datasets


@dataset_app.command("add")
def dataset_add(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV, Parquet or .npz file")],
    hub: HubOpt,
    org_dir: OrgDirOpt,
    license: Annotated[str, typer.Option("--license", help="SPDX licence id, e.g. CC-BY-4.0")],
    target: Annotated[str | None, typer.Option("--target", help="label column")] = None,
    name: Annotated[str | None, typer.Option("--name", help="dataset name; default: the file stem")] = None,
    description: Annotated[str, typer.Option("--description")] = "",
    visibility: Annotated[str, typer.Option("--visibility", help="private, members or public")] = "members",
    schema: Annotated[str | None, typer.Option("--schema",
                                               help="declared schema 'col:type,...'; the file must match")] = None,
) -> None:
    """Register a local dataset: the hub receives its card (schema, rows, SHA-256, licence), never rows."""
    from pydantic import ValidationError

    from consortium.node.store import DatasetError, LocalRegistry, build_card, load_table, parse_schema_option

    dataset_name = (name or file.stem).lower().replace(" ", "-")
    try:
        declared = parse_schema_option(schema, target) if schema else None
        loaded = load_table(file, target, declared)
        card = build_card(loaded, name=dataset_name, license=license, description=description,
                          visibility=visibility)
    except DatasetError as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail("; ".join(f"--{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()))
    with _org_client(hub, org_dir) as client:
        out = _call(client.register_dataset, card)
    LocalRegistry(org_dir).add(dataset_name, file.resolve(), target, card)
    console.print(f"registered [bold]{out['org']}/{out['name']}[/]: {out['rows']} rows, sha256 {out['sha256'][:16]}…")


@dataset_app.command("list")
def dataset_list(hub: HubOpt, token: TokenOpt = None) -> None:
    """List the dataset cards visible to you."""
    with _user_client(hub, token) as client:
        rows = _call(client.datasets)
    table = Table("dataset", "rows", "licence", "visibility", "sha256")
    for d in rows:
        table.add_row(f"{d['org']}/{d['name']}", str(d["rows"]), d["license"], d["visibility"], d["sha256"][:16])
    console.print(table)


@dataset_app.command("croissant")
def dataset_croissant(ref: Annotated[str, typer.Argument(help="org/name")], hub: HubOpt,
                      token: TokenOpt = None) -> None:
    """Print a dataset card as Croissant JSON-LD."""
    with _user_client(hub, token) as client:
        _print_json(_call(client.croissant, ref))


# ---------------------------------------------------------------------------------------------- environments


@environment_app.command("add")
def environment_add(
    name: Annotated[str, typer.Argument(help="environment name (lowercase, digits, . _ -)")],
    hub: HubOpt,
    org_dir: OrgDirOpt,
    gym: Annotated[str, typer.Option("--gym", help="gymnasium id, e.g. CartPole-v1")],
    license: Annotated[str, typer.Option("--license", help="SPDX licence id, e.g. MIT")],
    physics: Annotated[str | None, typer.Option(
        "--physics", help='JSON object of physics overrides, e.g. \'{"length": 0.6, "gravity": 9.0}\'',
    )] = None,
    private_physics: Annotated[bool, typer.Option(
        "--private-physics", help="publish only a salted SHA-256 commitment to the physics, not the values",
    )] = False,
    description: Annotated[str, typer.Option("--description")] = "",
    visibility: Annotated[str, typer.Option("--visibility", help="private, members or public")] = "members",
) -> None:
    """Register a local RL environment: the hub receives its card (gym id, physics or their commitment,
    licence); rollouts stay on the node."""
    from consortium.node.environments import (
        EnvironmentRegistry,
        EnvironmentSetupError,
        parse_physics_option,
        prepare_environment,
    )

    try:
        entry = prepare_environment(name, gym, parse_physics_option(physics), license, description,
                                    visibility, private_physics)
    except EnvironmentSetupError as exc:
        fail(str(exc))
    with _org_client(hub, org_dir) as client:
        out = _call(client.register_environment, entry.card)
    EnvironmentRegistry(org_dir).add(entry)
    values = ", ".join(f"{k}={v:.4g}" for k, v in sorted(entry.environment.physics.items()))
    shown = "private" if private_physics else values
    console.print(f"registered environment [bold]{out['org']}/{out['name']}[/]: {gym} ({shown}), "
                  f"physics sha256 {out['physics_sha256'][:16]}…")


@environment_app.command("list")
def environment_list(hub: HubOpt, token: TokenOpt = None) -> None:
    """List the environment cards visible to you (physics: the values that differ from gymnasium's)."""
    from rich.table import Column

    from consortium.fl.environments import default_physics

    with _user_client(hub, token) as client:
        rows = _call(client.environments)
    table = Table(Column("environment", overflow="fold"), "gymnasium id", "licence", "visibility", "physics")
    for e in rows:
        if e["physics"] is None:
            physics = "private"
        else:
            defaults = default_physics(e["env_id"])
            changed = {k: v for k, v in sorted(e["physics"].items()) if v != defaults.get(k)}
            physics = ", ".join(f"{k}={v:.4g}" for k, v in changed.items()) or "standard"
        table.add_row(f"{e['org']}/{e['name']}", e["env_id"], e["license"], e["visibility"], physics)
    console.print(table)


# ------------------------------------------------------------------------------------------------ projects, runs


@project_app.command("create")
def project_create(
    spec_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="project spec JSON")],
    hub: HubOpt,
    token: TokenOpt = None,
    test_set: Annotated[Path | None, typer.Option("--test-set", help="held-out safetensors (x, y) for the hub")] = None,
) -> None:
    """Propose a project from a JSON spec (algorithm, hyper-parameters, datasets, rounds, min_nodes...)."""
    import json

    from pydantic import ValidationError

    from consortium.protocol import project_spec_from_json

    try:
        spec = project_spec_from_json(spec_file.read_text())
    except json.JSONDecodeError as exc:
        fail(f"{spec_file}: not valid JSON: {exc}")
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()))
    with _user_client(hub, token) as client:
        project = _call(client.create_project, spec)
        if test_set is not None:
            _call(client.put_test_set, project["id"], test_set.read_bytes())
    console.print(f"project {project['id']} [bold]{project['name']}[/] proposed; needs approval from "
                  f"{', '.join(project['required_orgs'])}")


@project_app.command("show")
def project_show(project_id: int, hub: HubOpt, token: TokenOpt = None) -> None:
    """Show a project, its spec hash and its approvals."""
    with _user_client(hub, token) as client:
        _print_json(_call(client.project, project_id))


@project_app.command("approve")
def project_approve(
    project_id: int, hub: HubOpt, org_dir: OrgDirOpt,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="sign without asking")] = False,
) -> None:
    """Approve a project for your org: shows the hub's id, the spec hash (checked here) and the test set's
    SHA-256, asks, signs exactly those, and records them for your node."""
    from consortium.node.actions import ApprovalError, approve_project

    def confirm(subject) -> bool:
        console.print(f"project {subject.project_id} {subject.project_name!r}: the signature covers exactly\n"
                      f"  hub              {subject.hub_id}\n"
                      f"  spec sha256      {subject.spec_hash} (recomputed here from the spec)\n"
                      f"  test set sha256  {subject.test_set_sha256 or 'none'}", soft_wrap=True, markup=False)
        return yes or typer.confirm(f"Sign this approval for {client.identity.org}?", default=False)

    with _org_client(hub, org_dir) as client:
        try:
            subject = _call(approve_project, client, org_dir, project_id, confirm)
        except ApprovalError as exc:
            fail(str(exc))
    if subject is None:
        err_console.print("not approved: nothing was signed")
        raise typer.Exit(1)
    console.print(f"{client.identity.org} approved project {project_id} (hub {subject.hub_id}, spec "
                  f"{subject.spec_hash[:16]}…, test set {(subject.test_set_sha256 or 'none')[:16]})")


@run_app.command("start")
def run_start(project_id: int, hub: HubOpt, token: TokenOpt = None,
              follow: Annotated[bool, typer.Option("--follow/--no-follow")] = True) -> None:
    """Start a run of an approved project and follow it with a progress bar."""
    from consortium.watch import follow_run

    with _user_client(hub, token) as client:
        run = _call(client.start_run, project_id)
        if follow:
            run = _call(follow_run, client, run["id"], run["rounds"], console)
    _print_json(run)
    if run["status"] == "failed":
        raise typer.Exit(1)


@run_app.command("watch")
def run_watch(run_id: int, hub: HubOpt, token: TokenOpt = None) -> None:
    """Follow a run until it ends."""
    from consortium.watch import follow_run

    with _user_client(hub, token) as client:
        run = _call(client.run, run_id)
        _print_json(_call(follow_run, client, run_id, run["rounds"], console))


@model_app.command("download")
def model_download(model_id: int, hub: HubOpt, token: TokenOpt = None,
                   out: Annotated[Path, typer.Option("--out", help="directory")] = Path("model")) -> None:
    """Download a model's weights (safetensors), card (JSON + Markdown) and files (e.g. samples.png)."""
    from consortium.model_files import download_model

    with _user_client(hub, token) as client:
        paths = _call(download_model, client, model_id, out)
    for kind, path in paths.items():
        console.print(f"{kind}: {path}")


@ledger_app.command("verify")
def ledger_verify(
    hub: Annotated[str | None, typer.Option("--hub", envvar="CONSORTIUM_HUB")] = None,
    token: TokenOpt = None,
    db: Annotated[str | None, typer.Option("--db", help="verify straight from a database URL")] = None,
) -> None:
    """Recompute the hash chain up to the hub's recorded head; names the first bad or missing entry."""
    from consortium.ledger_audit import verify_from_db, verify_from_hub

    if db:
        report = verify_from_db(db)
    elif hub:
        with _user_client(hub, token) as client:
            report = _call(verify_from_hub, client)
    else:
        fail("give --hub (and --token) or --db")
    if report.ok:
        console.print(f"[green]ledger OK[/]: {report.checked} entries")
    else:
        where = f" at entry {report.first_bad_seq}" if report.first_bad_seq is not None else ""
        err_console.print(f"[bold red]ledger BROKEN[/]{where}: {report.reason}")
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------ demo, bench


@app.command()
def demo(
    exit_: Annotated[bool, typer.Option("--exit", help="stop when the story is told")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the summary as JSON")] = None,
    rounds: Annotated[int, typer.Option(help="federated rounds")] = 20,
    workdir: Annotated[Path, typer.Option(help="where hub, orgs and the model go")] = Path("demo-output"),
    port: Annotated[int | None, typer.Option(help="hub port (default: a free one)")] = None,
) -> None:
    """Three organisations train a digits classifier together: hub on SQLite, three node processes."""
    from consortium.demo import run_demo

    summary = run_demo(workdir=workdir, rounds=rounds, port=port, console=console,
                       keep_serving=not exit_, json_path=json_path)
    if not summary["ledger_ok"] or summary["status"] != "completed":
        raise typer.Exit(1)


@bench_app.command("deploy")
def bench_deploy(
    rounds: Annotated[int, typer.Option(help="rounds per repetition")] = 20,
    repeats: Annotated[int, typer.Option(help="repetitions (median of medians)")] = 3,
    json_path: Annotated[Path | None, typer.Option("--json", help="write results as JSON")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Round overhead of a real deployment: 3 node processes on loopback, digits MLP."""
    from consortium.bench.deploy import run_deploy_bench

    run_deploy_bench(rounds=rounds, repeats=repeats, json_path=json_path, markdown_path=markdown,
                     console=console)


@bench_app.command("fuzz")
def bench_fuzz(
    calls: Annotated[int, typer.Option(min=1, help="generated requests in all")] = 10_000,
    seed: Annotated[int, typer.Option(help="seed of the generated requests")] = 0,
    db: Annotated[str | None, typer.Option("--db", help="hub database URL (default: SQLite)")] = None,
    workdir: Annotated[Path | None, typer.Option(help="where hub and orgs go (default: a temp dir)")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the counts and failures")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Schemathesis over a real hub's whole API as each kind of caller: counts 5xx and schema violations."""
    import tempfile

    from consortium.bench import fuzz
    from consortium.bench.report import machine_info

    with tempfile.TemporaryDirectory(prefix="consortium-fuzz-") as scratch:
        report = fuzz.run_fuzz_bench(calls, seed, db, workdir or Path(scratch), err_console)
    command = f"consortium bench fuzz --calls {calls} --seed {seed}" + (" --db postgresql" if db else "")
    body = fuzz.report_markdown(report, command, machine_info(), "PostgreSQL" if db else "SQLite")
    _write_report(fuzz.report_dict(report), body, "fuzz", json_path, markdown)
    for failure in report.failures:
        err_console.print(failure, markup=False)
    if report.server_errors or report.violations:
        raise typer.Exit(1)


@bench_app.command("sim")
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


def _write_report(report: dict, body: str, suite: str, json_path: Path | None, markdown: Path | None) -> None:
    """Print a bench's markdown section and write its JSON and BENCHMARKS.md section when asked."""
    import json

    from consortium.bench.report import update_benchmarks_md

    console.print(body)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    if markdown is not None:
        update_benchmarks_md(markdown, suite, body)
        console.print(f"section {suite} of {markdown} updated")


@bench_app.command("gan")
def bench_gan(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="GAN spec with a simulation block")] = Path(
        "examples/gan-digits.json"),
    rounds: Annotated[int | None, typer.Option(help="override the spec's rounds")] = None,
    samples: Annotated[Path | None, typer.Option(help="directory for each generator's sample grid PNG")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write every generator's scores")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Federated conditional GAN across the spec's orgs vs each org alone: conditioning accuracy, Fréchet."""
    import torch

    from consortium.bench import gan
    from consortium.fl.core import FLError

    torch.set_num_threads(1)
    try:
        report = gan.run_gan_bench(spec_path, rounds, samples)
    except FLError as exc:
        fail(str(exc))
    command = f"consortium bench gan {spec_path}" + (f" --rounds {rounds}" if rounds else "")
    _write_report(report, gan.markdown(report, command), "gan", json_path, markdown)


@bench_app.command("rl")
def bench_rl(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="RL spec with an env: simulation")] = Path(
        "examples/rl-cartpole.json"),
    rounds: Annotated[int | None, typer.Option(help="override the spec's rounds")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write every policy's scores")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Federated PPO across CartPole physics variants vs each variant alone: mean return on CartPole-v1."""
    import torch

    from consortium.bench import rl
    from consortium.fl.core import FLError

    torch.set_num_threads(1)
    try:
        report = rl.run_rl_bench(spec_path, rounds)
    except FLError as exc:
        fail(str(exc))
    command = f"consortium bench rl {spec_path}" + (f" --rounds {rounds}" if rounds else "")
    _write_report(report, rl.markdown(report, command), "rl", json_path, markdown)


@bench_app.command("gpu")
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


@sim_app.command("run")
def sim_run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="project spec JSON (see examples/)")],
    clients: Annotated[int | None, typer.Option("--clients", help="number of simulated clients N")] = None,
    partition: Annotated[str | None, typer.Option(help="iid | dirichlet:ALPHA | shards:K")] = None,
    cohort: Annotated[float | None, typer.Option(help="clients per round: fraction in (0, 1] or a count")] = None,
    engine: Annotated[str | None, typer.Option(help="vectorized | loop | ray")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda")] = None,
    dataset: Annotated[str | None, typer.Option(help="digits, iris, wine, breast_cancer, synthetic-images, file:PATH")] = None,
    target: Annotated[str | None, typer.Option(help="label column of a file dataset")] = None,
    rounds: Annotated[int | None, typer.Option(help="override the spec's rounds")] = None,
    chunk_clients: Annotated[int | None, typer.Option(help="vectorised engine: clients per batched chunk")] = None,
    ray_actors: Annotated[int | None, typer.Option(help="ray engine: number of actors")] = None,
    ray_address: Annotated[str | None, typer.Option(help="ray engine: address of an existing cluster")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write rounds and final_metrics as JSON")] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="write per-round metrics as CSV")] = None,
    out: Annotated[Path, typer.Option(help="directory for the model weights and card")] = Path("sim-output"),
) -> None:
    """Run SPEC over N simulated clients with a progress bar; writes the model and its card to --out."""
    import torch

    from consortium.config import torch_threads
    from consortium.fl.core import FLError
    from consortium.sim.runner import run_simulation

    torch.set_num_threads(torch_threads())
    overrides = {"clients": clients, "partition": partition, "cohort": cohort, "engine": engine, "device": device,
                 "dataset": dataset, "target": target, "chunk_clients": chunk_clients, "ray_actors": ray_actors,
                 "ray_address": ray_address}
    try:
        run_simulation(spec_path, overrides, rounds=rounds, json_path=json_path, csv_path=csv_path,
                       out_dir=out, console=console)
    except FLError as exc:
        fail(str(exc))


def _names(option: str, value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        fail(f"{option}: give at least one name")
    return names


@sim_app.command("attack")
def sim_attack(
    rules: Annotated[str | None, typer.Option(help="comma-separated rules; default: FedAvg and every "
                                                   "robust rule")] = None,
    attacks: Annotated[str | None, typer.Option(help="comma-separated attacks; default: all")] = None,
    partitions: Annotated[str, typer.Option(help="comma-separated partitions")] = "iid,dirichlet:0.5",
    seeds: Annotated[int, typer.Option(help="seeds 0..S-1 per cell")] = 3,
    clients: Annotated[int, typer.Option(help="simulated clients n")] = 20,
    malicious: Annotated[int, typer.Option(help="malicious clients f (the first f client ids)")] = 4,
    rounds: Annotated[int | None, typer.Option(help="rounds per run")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write every run, cell and check")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Attack x rule matrix on the digits MLP (final accuracy, backdoor success; no attack is always run)."""
    import torch

    from consortium.config import torch_threads
    from consortium.fl.core import FLError
    from consortium.bench.attack_matrix import DEFAULT_ROUNDS, MatrixConfig, rule_catalogue
    from consortium.bench.attack_suite import run_attack_suite
    from consortium.sim.attacks import ATTACK_NAMES

    torch.set_num_threads(torch_threads())
    if seeds < 1:
        fail("--seeds: run at least one seed")
    config = MatrixConfig(clients, malicious, rounds or DEFAULT_ROUNDS)
    chosen_rules = _names("--rules", rules) if rules else list(rule_catalogue(clients, malicious))
    chosen_attacks = _names("--attacks", attacks) if attacks else list(ATTACK_NAMES)
    chosen_partitions = _names("--partitions", partitions)
    command = (f"consortium sim attack --rules {','.join(chosen_rules)} --attacks {','.join(chosen_attacks)} "
               f"--partitions {','.join(chosen_partitions)} --seeds {seeds} --clients {clients} "
               f"--malicious {malicious} --rounds {config.rounds}"
               + (f" --markdown {markdown.name}" if markdown else ""))
    try:
        run_attack_suite(chosen_rules, chosen_attacks, chosen_partitions, list(range(seeds)), config, command,
                         json_path=json_path, markdown_path=markdown, console=console)
    except FLError as exc:
        fail(str(exc))


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
