"""``consortium user``: users and their API tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from consortium.cli.common import CaFileOpt, HubOpt, TokenOpt, call, fail, print_json, user_client

app = typer.Typer(no_args_is_help=True, help="Users, their roles and their API tokens.")


@app.command("create")
def user_create(name: str, hub: HubOpt,
                role: Annotated[str, typer.Option(help="admin, steward or researcher")],
                org: Annotated[str | None, typer.Option(help="organisation of a steward")] = None,
                token: TokenOpt = None, ca_file: CaFileOpt = None) -> None:
    """Create a user and print its API token (shown once)."""
    with user_client(hub, token, ca_file) as client:
        print_json(call(client.create_user, name, role, org))


@app.command("list")
def user_list(hub: HubOpt, token: TokenOpt = None, ca_file: CaFileOpt = None) -> None:
    """List users (the admin: all; a steward: its organisation's)."""
    with user_client(hub, token, ca_file) as client:
        print_json(call(client.users))


@app.command("set-role")
def user_set_role(name: str, role: Annotated[str, typer.Argument(help="admin, steward or researcher")],
                  hub: HubOpt, token: TokenOpt = None, ca_file: CaFileOpt = None) -> None:
    """Change a user's role (the admin; a steward inside its organisation, never to admin)."""
    with user_client(hub, token, ca_file) as client:
        print_json(call(client.update_user, name, role=role))


@app.command("deactivate")
def user_deactivate(name: str, hub: HubOpt, token: TokenOpt = None, ca_file: CaFileOpt = None) -> None:
    """Deactivate a user: its tokens stop working at once (admin)."""
    with user_client(hub, token, ca_file) as client:
        print_json(call(client.update_user, name, active=False))


@app.command("reactivate")
def user_reactivate(name: str, hub: HubOpt, token: TokenOpt = None, ca_file: CaFileOpt = None) -> None:
    """Reactivate a deactivated user (admin)."""
    with user_client(hub, token, ca_file) as client:
        print_json(call(client.update_user, name, active=True))


@app.command("tokens")
def user_tokens(name: str, hub: HubOpt, token: TokenOpt = None, ca_file: CaFileOpt = None) -> None:
    """List a user's API tokens (ids and dates, never the secrets): your own, or any user's for the admin."""
    with user_client(hub, token, ca_file) as client:
        print_json(call(client.tokens, name))


@app.command("new-token")
def user_new_token(name: str, hub: HubOpt, token: TokenOpt = None, ca_file: CaFileOpt = None) -> None:
    """Issue another API token for a user and print it (shown once): your own, or any user's for the admin."""
    with user_client(hub, token, ca_file) as client:
        print_json(call(client.issue_token, name))


@app.command("revoke-token")
def user_revoke_token(
    name: str, hub: HubOpt, token: TokenOpt = None,
    token_id: Annotated[int | None, typer.Option(
        "--id", help="the token to revoke (see `user tokens`)")] = None,
    all_tokens: Annotated[bool, typer.Option("--all", help="revoke every token of the user")] = False,
    ca_file: CaFileOpt = None,
) -> None:
    """Revoke one API token (--id) or all of a user's (--all); a revoked token gets 401 at once."""
    if (token_id is None) == (not all_tokens):
        fail("give exactly one of --id ID or --all")
    with user_client(hub, token, ca_file) as client:
        print_json(call(client.revoke_tokens, name, token_id))
