"""``consortium org``: organisation keys, admission and node enrolment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consortium.cli.common import (
    CaFileOpt,
    HubOpt,
    OptionalOrgDirOpt,
    OrgDirOpt,
    TokenOpt,
    call,
    console,
    fail,
    hub_client,
    member_client,
    print_json,
    user_client,
)

app = typer.Typer(no_args_is_help=True, help="Organisation keys, admission and node enrolment.")


def enrol(hub: str, org_dir: Path, token: str, node_name: str, ca_file: Path | None = None) -> dict:
    """Register the org's public key for a node with a one-time token (``org enrol``, ``node --enrol-token``)."""
    from consortium.crypto import load_org_identity
    from consortium.protocol import EnrolRequest

    identity = load_org_identity(org_dir)
    with hub_client(hub, ca_file) as client:
        return call(client.enrol, EnrolRequest(org=identity.org, token=token,
                                               public_key=identity.public_key_b64, node_name=node_name))


@app.command("init")
def org_init(
    name: Annotated[str, typer.Argument(help="organisation name (lowercase, digits, . _ -)")],
    dir: Annotated[Path, typer.Option("--dir", help="directory for the key pair")] = Path("."),
) -> None:
    """Make the organisation's Ed25519 key pair in a local directory."""
    from consortium.crypto import generate_org_key

    target = dir if dir.name == name else dir / name
    try:
        identity = generate_org_key(target, name)
    except FileExistsError as exc:
        fail(str(exc))
    console.print(f"org [bold]{name}[/] key {identity.key_id} in {target}")


@app.command("create")
def org_create(name: str, hub: HubOpt, token: TokenOpt = None, ca_file: CaFileOpt = None) -> None:
    """Admit an organisation (admin)."""
    with user_client(hub, token, ca_file) as client:
        print_json(call(client.create_org, name))


@app.command("enrolment-token")
def org_enrolment_token(name: str, hub: HubOpt, token: TokenOpt = None, ca_file: CaFileOpt = None) -> None:
    """Issue a one-time enrolment token for an organisation's node (admin)."""
    with user_client(hub, token, ca_file) as client:
        console.print(call(client.enrolment_token, name))


@app.command("enrol")
def org_enrol(hub: HubOpt, org_dir: OrgDirOpt,
              enrol_token: Annotated[str, typer.Option("--enrol-token")],
              node_name: Annotated[str, typer.Option("--node-name")] = "node",
              ca_file: CaFileOpt = None) -> None:
    """Register this org's public key with the hub using a one-time token."""
    print_json(enrol(hub, org_dir, enrol_token, node_name, ca_file))


@app.command("rotate-key")
def org_rotate_key(hub: HubOpt, org_dir: OrgDirOpt, ca_file: CaFileOpt = None) -> None:
    """Replace the org's key by a fresh one, signed over by the current key; the running node switches by
    itself, the old private key stays in ORG_DIR/org.key.old."""
    from consortium.cli.common import org_client
    from consortium.node.actions import rotate_org_key

    with org_client(hub, org_dir, ca_file) as client:
        old = client.identity.key_id
        try:
            new = call(rotate_org_key, client, org_dir)
        except (FileExistsError, ValueError) as exc:
            fail(str(exc))
    console.print(f"org [bold]{new.org}[/] now signs with key {new.key_id} (was {old})")


@app.command("keys")
def org_keys(name: str, hub: HubOpt, token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None,
             ca_file: CaFileOpt = None) -> None:
    """Every key an organisation has held, with the signatures that handed over from one to the next."""
    with member_client(hub, token, org_dir, ca_file) as client:
        print_json(call(client.org_keys, name))
