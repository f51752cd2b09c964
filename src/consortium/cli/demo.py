"""``consortium demo``: the three-organisation digits story, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consortium.cli.common import console


def demo(
    exit_: Annotated[bool, typer.Option("--exit", help="stop when the story is told")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the summary as JSON")] = None,
    rounds: Annotated[int, typer.Option(help="federated rounds")] = 20,
    workdir: Annotated[Path, typer.Option(help="where hub, orgs and the model go")] = Path("demo-output"),
    port: Annotated[int | None, typer.Option(help="hub port (default: a free one)")] = None,
) -> None:
    """Three organisations train a digits classifier together: hub on SQLite, three node processes."""
    from consortium.demo import run_demo

    summary = run_demo(workdir=workdir, rounds=rounds, port=port, console=console,
                       keep_serving=not exit_, json_path=json_path)
    if not summary["ledger_ok"] or summary["status"] != "completed":
        raise typer.Exit(1)
