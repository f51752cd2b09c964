"""``consortium run``: start and follow runs."""

from __future__ import annotations

from typing import Annotated

import typer

from consortium.cli.common import CaFileOpt, HubOpt, TokenOpt, call, console, print_json, user_client

app = typer.Typer(no_args_is_help=True, help="Start and follow runs.")


@app.command("start")
def run_start(project_id: int, hub: HubOpt, token: TokenOpt = None,
              follow: Annotated[bool, typer.Option("--follow/--no-follow")] = True,
              ca_file: CaFileOpt = None) -> None:
    """Start a run of an approved project and follow it with a progress bar."""
    from consortium.watch import follow_run

    with user_client(hub, token, ca_file) as client:
        run = call(client.start_run, project_id)
        if follow:
            run = call(follow_run, client, run["id"], run["rounds"], console)
    print_json(run)
    if run["status"] == "failed":
        raise typer.Exit(1)


@app.command("watch")
def run_watch(run_id: int, hub: HubOpt, token: TokenOpt = None, ca_file: CaFileOpt = None) -> None:
    """Follow a run until it ends."""
    from consortium.watch import follow_run

    with user_client(hub, token, ca_file) as client:
        run = call(client.run, run_id)
        print_json(call(follow_run, client, run_id, run["rounds"], console))
