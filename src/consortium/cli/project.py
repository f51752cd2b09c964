"""``consortium project``: propose and inspect projects (votes to run them: ``consortium vote``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consortium.cli.common import CaFileOpt, HubOpt, TokenOpt, call, console, fail, print_json, user_client

app = typer.Typer(no_args_is_help=True, help="Propose and inspect projects (vote to run one with `consortium vote`).")


@app.command("create")
def project_create(
    spec_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="project spec JSON")],
    hub: HubOpt,
    token: TokenOpt = None,
    test_set: Annotated[Path | None, typer.Option("--test-set", help="held-out safetensors (x, y) for the hub")] = None,
    ca_file: CaFileOpt = None,
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
    with user_client(hub, token, ca_file) as client:
        project = call(client.create_project, spec)
        if test_set is not None:
            call(client.put_test_set, project["id"], test_set.read_bytes())
        project = call(client.project, project["id"])
    console.print(f"project {project['id']} [bold]{project['name']}[/] proposed: proposal "
                  f"{project['proposal_id']} needs a yes from {', '.join(project['required_orgs'])} "
                  f"(`consortium vote {project['proposal_id']} yes`)")


@app.command("show")
def project_show(project_id: int, hub: HubOpt, token: TokenOpt = None, ca_file: CaFileOpt = None) -> None:
    """Show a project, its spec hash, its proposal and who voted yes."""
    with user_client(hub, token, ca_file) as client:
        print_json(call(client.project, project_id))
