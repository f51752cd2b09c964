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
CaFileOpt = Annotated[Path | None, typer.Option(
    "--ca-file", envvar="CONSORTIUM_CA_FILE",
    help="PEM bundle of the CAs an https hub's certificate must chain to (default: the system's trust store)")]


def fail(message: str) -> NoReturn:
    """Print ``message`` as an error and exit with status 2 (a usage or input error)."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def hub_client(hub: str, ca_file: Path | None = None, **credentials: Any):
    """A hub client trusting ``ca_file`` (else the system's trust store) for an https hub; a CA file that is
    missing or holds no CA certificate is a clear error."""
    from consortium.client import HubClient

    try:
        return HubClient(hub, ca_file=ca_file, **credentials)
    except ValueError as exc:
        fail(f"--ca-file (or CONSORTIUM_CA_FILE): {exc}")


def user_client(hub: str, token: str | None, ca_file: Path | None = None):
    """A hub client that authenticates with a user's API token."""
    if not token:
        fail("--token (or CONSORTIUM_TOKEN) is required for this command")
    return hub_client(hub, ca_file, token=token)


def org_client(hub: str, org_dir: Path, ca_file: Path | None = None):
    """A hub client that signs its requests with the org's key from ``org_dir`` (its current one: a key
    rotated meanwhile is picked up at the next request)."""
    from consortium.crypto import OrgKeyFile

    try:
        identity = OrgKeyFile(org_dir)
    except (FileNotFoundError, ValueError) as exc:
        fail(f"--org-dir: {exc}")
    return hub_client(hub, ca_file, identity=identity)


def call(fn, *args: Any, **kwargs: Any) -> Any:
    """Run a hub call; a hub error becomes a clear CLI error instead of a traceback."""
    import httpx

    from consortium.client import HubError
    from consortium.tls import HubTLSError

    try:
        return fn(*args, **kwargs)
    except HubError as exc:
        if exc.status_code == 401 and "unknown or revoked key id" in str(exc.detail):
            fail(f"{exc.detail} (HTTP 401): the hub does not know this org's key; enrol this org first "
                 "(consortium org enrol --hub URL --org-dir DIR --enrol-token TOKEN), or its key was revoked")
        fail(f"{exc.detail} (HTTP {exc.status_code})")
    except HubTLSError as exc:
        fail(str(exc))
    except httpx.RequestError as exc:
        fail(f"cannot reach the hub at {_hub_origin(exc)}: {exc}")
    except httpx.HTTPError as exc:
        fail(f"cannot reach the hub: {exc}")


def _hub_origin(exc) -> str:
    """scheme://host:port of the failed request."""
    try:
        url = exc.request.url
    except RuntimeError:  # an error raised without its request
        return "?"
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


def print_json(data: Any) -> None:
    """Print ``data`` as highlighted JSON (dates and other objects as strings)."""
    console.print_json(json.dumps(data, default=str))



OptionalOrgDirOpt = Annotated[Path | None, typer.Option("--org-dir", help="act as the org whose key is here")]


def member_client(hub: str, token: str | None, org_dir: Path | None, ca_file: Path | None = None):
    """A client acting as a user (``--token``) or as an org (``--org-dir``): read commands accept either."""
    if org_dir is not None:
        return org_client(hub, org_dir, ca_file)
    return user_client(hub, token, ca_file)


def grant_option(value: str | None) -> str | list[str] | None:
    """A grant as typed on the command line: ``members``, ``nobody``, ``everyone`` or org names separated by
    commas (None: unchanged)."""
    if value is None or value in ("members", "nobody", "everyone"):
        return value
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        fail("a grant is members, nobody, everyone or org names separated by commas")
    return names
