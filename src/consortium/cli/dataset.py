"""``consortium dataset``: register local datasets and read the cards on the hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from consortium.cli.common import (
    CaFileOpt,
    HubOpt,
    OptionalOrgDirOpt,
    OrgDirOpt,
    TokenOpt,
    call,
    console,
    fail,
    grant_option,
    member_client,
    org_client,
    print_json,
    user_client,
)

app = typer.Typer(no_args_is_help=True, help="Register local datasets (only their cards reach the hub).")


@app.command("add")
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
    budget_epsilon: Annotated[float | None, typer.Option(
        "--budget-epsilon", help="total privacy budget epsilon for DP runs (this node refuses rounds past it)")] = None,
    budget_delta: Annotated[float | None, typer.Option(
        "--budget-delta", help="the delta of the privacy budget (with --budget-epsilon)")] = None,
    categorical: Annotated[list[str] | None, typer.Option(
        "--categorical", help="a feature column of categories (strings allowed; repeat for several)")] = None,
    allow_missing: Annotated[bool, typer.Option(
        "--allow-missing", help="accept empty feature cells (for projects whose preprocessing imputes them)")] = False,
        ca_file: CaFileOpt = None,
) -> None:
    """Register a local dataset: the hub receives its card (schema, rows, SHA-256, licence), never rows."""
    from pydantic import ValidationError

    from consortium.node.actions import prepare_dataset, register_dataset
    from consortium.node.registry import parse_schema_option
    from consortium.tables import DatasetError

    dataset_name = (name or file.stem).lower().replace(" ", "-")
    if (budget_epsilon is None) != (budget_delta is None):
        fail("--budget-epsilon and --budget-delta go together: a privacy budget is an (epsilon, delta) pair")
    budget = None if budget_epsilon is None or budget_delta is None else (budget_epsilon, budget_delta)
    try:
        declared = parse_schema_option(schema, target) if schema else None
        loaded, card = prepare_dataset(file, dataset_name, license, target, description, visibility, declared,
                                       privacy_budget=budget, categorical=categorical or None,
                                       allow_missing=allow_missing)
    except DatasetError as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail("; ".join(f"--{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()))
    with org_client(hub, org_dir, ca_file) as client:
        out = call(register_dataset, client, org_dir, loaded, card)
    console.print(f"registered [bold]{out['org']}/{out['name']}[/]: {out['rows']} rows, sha256 {out['sha256'][:16]}…")


@app.command("list")
def dataset_list(hub: HubOpt, token: TokenOpt = None,
                 as_json: Annotated[bool, typer.Option("--json", help="the cards as JSON")] = False,
                 ca_file: CaFileOpt = None) -> None:
    """List the dataset cards visible to you (the id to use in a project is ``org/name``)."""
    with user_client(hub, token, ca_file) as client:
        rows = call(client.datasets)
    if as_json:
        print_json(rows)
        return
    refs = [f"{d['org']}/{d['name']}" for d in rows]
    table = Table(expand=False)
    table.add_column("dataset", no_wrap=True, min_width=max(map(len, refs), default=7))
    for column in ("rows", "licence", "visibility"):
        table.add_column(column)
    table.add_column("sha256", overflow="ellipsis", no_wrap=True)
    for ref, d in zip(refs, rows, strict=True):
        table.add_row(ref, str(d["rows"]), d["license"], d["visibility"], d["sha256"][:16])
    console.print(table)


@app.command("croissant")
def dataset_croissant(ref: Annotated[str, typer.Argument(help="org/name")], hub: HubOpt,
                      token: TokenOpt = None, ca_file: CaFileOpt = None) -> None:
    """Print a dataset card as Croissant JSON-LD."""
    with user_client(hub, token, ca_file) as client:
        print_json(call(client.croissant, ref))


VisibilityOpt = Annotated[str | None, typer.Option("--visibility", help="private, members or public")]
ProcessOpt = Annotated[str | None, typer.Option(
    "--process", help="who may train on it: members, nobody or org names separated by commas")]
DownloadOpt = Annotated[str | None, typer.Option(
    "--download", help="who may download it (and models trained on it): members, nobody, everyone or org "
                       "names separated by commas")]


@app.command("rights")
def dataset_rights(ref: Annotated[str, typer.Argument(help="org/name, a dataset of your org")], hub: HubOpt,
                   visibility: VisibilityOpt = None, process: ProcessOpt = None, download: DownloadOpt = None,
                   token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None,
                   ca_file: CaFileOpt = None) -> None:
    """Change who may see, process and download your org's dataset (as its key or a steward); projects
    proposed before keep the rights they were proposed under."""
    with member_client(hub, token, org_dir, ca_file) as client:
        card = call(client.set_source_rights, ref, visibility=visibility, process=grant_option(process),
                    download=grant_option(download))
    console.print(f"[bold]{card['org']}/{card['name']}[/]: visibility {card['visibility']}, process "
                  f"{card['process']}, download {card['download']}")
