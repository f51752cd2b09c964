"""``consortium environment``: register local RL environments and read the cards on the hub."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from consortium.cli.common import CaFileOpt, HubOpt, OrgDirOpt, TokenOpt, call, console, fail, org_client, user_client

app = typer.Typer(no_args_is_help=True,
                              help="Register local RL environments (only their cards reach the hub).")


@app.command("add")
def environment_add(
    name: Annotated[str, typer.Argument(help="environment name (lowercase, digits, . _ -)")],
    hub: HubOpt,
    org_dir: OrgDirOpt,
    gym: Annotated[str, typer.Option("--gym", help="gymnasium id, e.g. CartPole-v1")],
    license: Annotated[str, typer.Option("--license", help="SPDX licence id, e.g. MIT")],
    physics: Annotated[str | None, typer.Option(
        "--physics", help='JSON object of physics overrides, e.g. \'{"length": 0.6, "gravity": 9.0}\'',
    )] = None,
    private_physics: Annotated[bool, typer.Option(
        "--private-physics", help="publish only a salted SHA-256 commitment to the physics, not the values",
    )] = False,
    description: Annotated[str, typer.Option("--description")] = "",
    visibility: Annotated[str, typer.Option("--visibility", help="private, members or public")] = "members",
    ca_file: CaFileOpt = None,
) -> None:
    """Register a local RL environment: the hub receives its card (gym id, physics or their commitment,
    licence); rollouts stay on the node."""
    from consortium.node.actions import register_environment
    from consortium.node.environments import EnvironmentSetupError, parse_physics_option, prepare_environment

    try:
        entry = prepare_environment(name, gym, parse_physics_option(physics), license, description,
                                    visibility, private_physics)
    except EnvironmentSetupError as exc:
        fail(str(exc))
    with org_client(hub, org_dir, ca_file) as client:
        out = call(register_environment, client, org_dir, entry)
    values = ", ".join(f"{k}={v:.4g}" for k, v in sorted(entry.environment.physics.items()))
    shown = "private" if private_physics else values
    console.print(f"registered environment [bold]{out['org']}/{out['name']}[/]: {gym} ({shown}), "
                  f"physics sha256 {out['physics_sha256'][:16]}…")


@app.command("list")
def environment_list(hub: HubOpt, token: TokenOpt = None, ca_file: CaFileOpt = None) -> None:
    """List the environment cards visible to you (physics: the values that differ from gymnasium's)."""
    from rich.table import Column

    from consortium.fl.environments import default_physics

    with user_client(hub, token, ca_file) as client:
        rows = call(client.environments)
    table = Table(Column("environment", overflow="fold"), "gymnasium id", "licence", "visibility", "physics")
    for e in rows:
        if e["physics"] is None:
            physics = "private"
        else:
            defaults = default_physics(e["env_id"])
            changed = {k: v for k, v in sorted(e["physics"].items()) if v != defaults.get(k)}
            physics = ", ".join(f"{k}={v:.4g}" for k, v in changed.items()) or "standard"
        table.add_row(f"{e['org']}/{e['name']}", e["env_id"], e["license"], e["visibility"], physics)
    console.print(table)
