"""``consortium ledger``: audit the tamper-evident ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consortium.cli.common import CaFileOpt, TokenOpt, call, console, err_console, fail, user_client

app = typer.Typer(no_args_is_help=True, help="Audit the tamper-evident ledger.")


@app.command("verify")
def ledger_verify(
    hub: Annotated[str | None, typer.Option("--hub", envvar="CONSORTIUM_HUB")] = None,
    token: TokenOpt = None,
    db: Annotated[str | None, typer.Option("--db", help="verify straight from a database URL")] = None,
    against: Annotated[Path | None, typer.Option(
        "--against", exists=True, dir_okay=False,
        help="also check these checkpoints: a node's checkpoints.jsonl or one checkpoint's JSON")] = None,
        ca_file: CaFileOpt = None,
) -> None:
    """Check the hash chain up to the hub's head, every hub and actor signature, and the Merkle root against
    every checkpoint the hub serves (and --against); names the first bad entry or checkpoint."""
    from consortium.ledger_audit import load_claims, verify_from_db, verify_from_hub

    try:
        claims = load_claims(against) if against else []
    except ValueError as exc:
        fail(f"--against: {exc}")
    if db:
        report = verify_from_db(db, claims)
    elif hub:
        with user_client(hub, token, ca_file) as client:
            report = call(verify_from_hub, client, claims)
    else:
        fail("give --hub (and --token) or --db")
    if report.ok:
        console.print(f"[green]ledger OK[/]: {report.checked} entries, {report.checkpoints} checkpoints, "
                      f"root {report.root}")
        return
    if report.first_bad_seq is not None and report.bad_checkpoint is None:
        where = f" at entry {report.first_bad_seq}"
    elif report.bad_checkpoint is not None:
        where = f" at checkpoint {report.bad_checkpoint}"
    else:
        where = ""
    err_console.print(f"[bold red]ledger BROKEN[/]{where}: {report.reason}")
    raise typer.Exit(1)
