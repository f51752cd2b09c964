"""Every command that talks to a hub (it takes --hub) also takes --ca-file, so an https hub signed by a private
CA is reachable from all of them."""

from __future__ import annotations

import typer
from typer.main import get_command

from consortium.cli import app


def commands(group, path=()):
    for name, command in getattr(group, "commands", {}).items():
        if isinstance(command, typer.core.TyperGroup):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_command_with_a_hub_option_takes_a_ca_file() -> None:
    with_hub = {path: {opt for p in cmd.params for opt in p.opts} for path, cmd in commands(get_command(app))
                if any("--hub" in p.opts for p in cmd.params)}
    assert len(with_hub) > 30
    assert [" ".join(path) for path, opts in with_hub.items() if "--ca-file" not in opts] == []
