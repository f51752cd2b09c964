"""What every command group shares: the consoles, the hub/token/org-dir options, hub clients and how a hub
error or a bad option becomes a clear message and exit code 2 instead of a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

HubOpt = Annotated[str, typer.Option("--hub", envvar="CONSORTIUM_HUB", help="hub base URL")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="CONSORTIUM_TOKEN", help="API token")]
OrgDirOpt = Annotated[Path, typer.Option("--org-dir", help="the org's local directory (keys, datasets)")]


def fail(message: str) -> NoReturn:
    """Print ``message`` as an error and exit with status 2 (a usage or input error)."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def user_client(hub: str, token: str | None):
    """A hub client that authenticates with a user's API token."""
    from consortium.client import HubClient

    if not token:
        fail("--token (or CONSORTIUM_TOKEN) is required for this command")
    return HubClient(hub, token=token)


def org_client(hub: str, org_dir: Path):
    """A hub client that signs its requests with the org's key from ``org_dir`` (its current one: a key
    rotated meanwhile is picked up at the next request)."""
    from consortium.client import HubClient
    from consortium.crypto import OrgKeyFile

    try:
        identity = OrgKeyFile(org_dir)
    except (FileNotFoundError, ValueError) as exc:
        fail(f"--org-dir: {exc}")
    return HubClient(hub, identity=identity)


def call(fn, *args: Any, **kwargs: Any) -> Any:
    """Run a hub call; a hub error becomes a clear CLI error instead of a traceback."""
    import httpx

    from consortium.client import HubError

    try:
        return fn(*args, **kwargs)
    except HubError as exc:
        if exc.status_code == 401 and "unknown or revoked key id" in str(exc.detail):
            fail(f"{exc.detail} (HTTP 401): the hub does not know this org's key; enrol this org first "
                 "(consortium org enrol --hub URL --org-dir DIR --enrol-token TOKEN), or its key was revoked")
        fail(f"{exc.detail} (HTTP {exc.status_code})")
    except httpx.HTTPError as exc:
        fail(f"cannot reach the hub: {exc}")


def print_json(data: Any) -> None:
    """Print ``data`` as highlighted JSON (dates and other objects as strings)."""
    console.print_json(json.dumps(data, default=str))



OptionalOrgDirOpt = Annotated[Path | None, typer.Option("--org-dir", help="act as the org whose key is here")]


def member_client(hub: str, token: str | None, org_dir: Path | None):
    """A client acting as a user (``--token``) or as an org (``--org-dir``): read commands accept either."""
    if org_dir is not None:
        return org_client(hub, org_dir)
    return user_client(hub, token)


def grant_option(value: str | None) -> str | list[str] | None:
    """A grant as typed on the command line: ``members``, ``nobody``, ``everyone`` or org names separated by
    commas (None: unchanged)."""
    if value is None or value in ("members", "nobody", "everyone"):
        return value
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        fail("a grant is members, nobody, everyone or org names separated by commas")
    return names
