"""``consortium model``: the model registry, and downloading models with their cards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from consortium.cli.common import CaFileOpt, HubOpt, OptionalOrgDirOpt, TokenOpt, call, console, member_client, user_client

app = typer.Typer(no_args_is_help=True, help="List models (versions, releases, licences) and download them.")


@app.command("list")
def model_list(
    hub: HubOpt, token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None,
    project: Annotated[str | None, typer.Option("--project", help="the project's name")] = None,
    status: Annotated[str | None, typer.Option("--status", help="trained or released")] = None,
    licence: Annotated[str | None, typer.Option("--licence", help="part of the licence, or an SPDX "
                                                                  "expression")] = None,
    org: Annotated[str | None, typer.Option("--org", help="a participating organisation")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 100,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    ca_file: CaFileOpt = None,
) -> None:
    """The models you may see: each project's versions, their status, licence and obligations."""
    with member_client(hub, token, org_dir, ca_file) as client:
        rows = call(client.list_models, project=project, status=status, licence=licence, org=org, limit=limit,
                    offset=offset)
    table = Table("id", "project", "version", "status", "licence", "obligations", "participants", "created",
                  "released")
    for m in rows:
        obligations = ", ".join(name for name, terms in m["obligations"].items() if terms) or "-"
        table.add_row(str(m["id"]), m["project"], str(m["version"] or "-"), m["status"], m["license"],
                      obligations, ", ".join(m["card"].get("participating_orgs", [])), m["created_at"][:19],
                      (m["released_at"] or "-")[:19])
    console.print(table)


@app.command("download")
def model_download(model_id: int, hub: HubOpt, token: TokenOpt = None,
                   out: Annotated[Path, typer.Option("--out", help="directory")] = Path("model"),
                   ca_file: CaFileOpt = None) -> None:
    """Download a model's weights (safetensors), card (JSON + Markdown) and files (e.g. samples.png)."""
    from consortium.model_files import download_model

    with user_client(hub, token, ca_file) as client:
        paths = call(download_model, client, model_id, out)
    for kind, path in paths.items():
        console.print(f"{kind}: {path}")
