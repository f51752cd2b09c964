"""``consortium project``: propose, inspect and approve projects."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consortium.cli.common import HubOpt, OrgDirOpt, TokenOpt, call, console, err_console, fail, org_client, print_json, user_client

app = typer.Typer(no_args_is_help=True, help="Propose, inspect and approve projects.")


@app.command("create")
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
    with user_client(hub, token) as client:
        project = call(client.create_project, spec)
        if test_set is not None:
            call(client.put_test_set, project["id"], test_set.read_bytes())
    console.print(f"project {project['id']} [bold]{project['name']}[/] proposed; needs approval from "
                  f"{', '.join(project['required_orgs'])}")


@app.command("show")
def project_show(project_id: int, hub: HubOpt, token: TokenOpt = None) -> None:
    """Show a project, its spec hash and its approvals."""
    with user_client(hub, token) as client:
        print_json(call(client.project, project_id))


@app.command("approve")
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

    with org_client(hub, org_dir) as client:
        try:
            subject = call(approve_project, client, org_dir, project_id, confirm)
        except ApprovalError as exc:
            fail(str(exc))
    if subject is None:
        err_console.print("not approved: nothing was signed")
        raise typer.Exit(1)
    console.print(f"{client.identity.org} approved project {project_id} (hub {subject.hub_id}, spec "
                  f"{subject.spec_hash[:16]}…, test set {(subject.test_set_sha256 or 'none')[:16]})")
