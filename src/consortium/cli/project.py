"""``consortium project``: propose, list, inspect and withdraw projects (votes to run them: ``consortium vote``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from consortium.cli.common import CaFileOpt, HubOpt, TokenOpt, call, console, fail, print_json, user_client

app = typer.Typer(no_args_is_help=True, help="Propose and inspect projects (vote to run one with `consortium vote`).")


def read_spec(spec_file: Path):
    """The project spec in ``spec_file``; a clear CLI error naming the field at fault."""
    import json

    from pydantic import ValidationError

    from consortium.protocol import project_spec_from_json

    try:
        return project_spec_from_json(spec_file.read_text())
    except json.JSONDecodeError as exc:
        fail(f"{spec_file}: not valid JSON: {exc}")
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()))


@app.command("create")
def project_create(
    spec_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="project spec JSON")],
    hub: HubOpt,
    token: TokenOpt = None,
    test_set: Annotated[Path | None, typer.Option(
        "--test-set", exists=True, dir_okay=False,
        help="held-out test set for the hub (`consortium testset make`); proposed with the project in one "
             "request: if it is refused, no project is created")] = None,
    ca_file: CaFileOpt = None,
) -> None:
    """Propose a project from a JSON spec (algorithm, hyper-parameters, datasets, rounds, min_nodes...)."""
    from consortium.test_sets import TestSetError

    spec = read_spec(spec_file)
    with user_client(hub, token, ca_file) as client:
        try:
            project = call(client.create_project, spec, test_set.read_bytes() if test_set is not None else None)
        except TestSetError as exc:
            fail(f"{test_set}: {exc}")
    console.print(f"project {project['id']} [bold]{project['name']}[/] proposed: proposal "
                  f"{project['proposal_id']} needs a yes from {', '.join(project['required_orgs'])} "
                  f"(`consortium vote {project['proposal_id']} yes`)")


@app.command("list")
def project_list(hub: HubOpt, token: TokenOpt = None,
                 as_json: Annotated[bool, typer.Option("--json", help="the projects as JSON")] = False,
                 ca_file: CaFileOpt = None) -> None:
    """List the projects you take part in, with their status and who still has to vote."""
    with user_client(hub, token, ca_file) as client:
        rows = call(client.projects)
    if as_json:
        print_json(rows)
        return
    table = Table("id", "project", "status", "proposer", "datasets", "voted yes", "test set")
    for p in rows:
        table.add_row(str(p["id"]), p["name"], p["status"], p["proposer"], ", ".join(p["required_orgs"]),
                      ", ".join(p["approved_orgs"]) or "-", (p["test_set_sha256"] or "-")[:12])
    console.print(table)


@app.command("show")
def project_show(project_id: int, hub: HubOpt, token: TokenOpt = None, ca_file: CaFileOpt = None) -> None:
    """Show a project, its spec hash, its proposal and who voted yes."""
    with user_client(hub, token, ca_file) as client:
        print_json(call(client.project, project_id))


@app.command("withdraw")
def project_withdraw(project_id: int, hub: HubOpt, token: TokenOpt = None,
                     reason: Annotated[str, typer.Option("--reason")] = "", ca_file: CaFileOpt = None) -> None:
    """Withdraw a project you proposed that has not run (its open proposal is withdrawn with it)."""
    with user_client(hub, token, ca_file) as client:
        project = call(client.withdraw_project, project_id, reason)
    console.print(f"project {project['id']} [bold]{project['name']}[/] withdrawn")
