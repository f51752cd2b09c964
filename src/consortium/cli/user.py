"""``consortium user``: users and their API tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from consortium.cli.common import HubOpt, TokenOpt, call, print_json, user_client

app = typer.Typer(no_args_is_help=True, help="Users and their API tokens (admin).")


@app.command("create")
def user_create(name: str, hub: HubOpt,
                role: Annotated[str, typer.Option(help="admin, steward or researcher")],
                org: Annotated[str | None, typer.Option(help="organisation of a steward")] = None,
                token: TokenOpt = None) -> None:
    """Create a user and print its API token (shown once)."""
    with user_client(hub, token) as client:
        print_json(call(client.create_user, name, role, org))
