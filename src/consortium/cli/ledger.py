"""``consortium ledger``: audit the tamper-evident ledger."""

from __future__ import annotations

from typing import Annotated

import typer

from consortium.cli.common import TokenOpt, call, console, err_console, fail, user_client

app = typer.Typer(no_args_is_help=True, help="Audit the tamper-evident ledger.")


@app.command("verify")
def ledger_verify(
    hub: Annotated[str | None, typer.Option("--hub", envvar="CONSORTIUM_HUB")] = None,
    token: TokenOpt = None,
    db: Annotated[str | None, typer.Option("--db", help="verify straight from a database URL")] = None,
) -> None:
    """Recompute the hash chain up to the hub's recorded head; names the first bad or missing entry."""
    from consortium.ledger_audit import verify_from_db, verify_from_hub

    if db:
        report = verify_from_db(db)
    elif hub:
        with user_client(hub, token) as client:
            report = call(verify_from_hub, client)
    else:
        fail("give --hub (and --token) or --db")
    if report.ok:
        console.print(f"[green]ledger OK[/]: {report.checked} entries")
    else:
        where = f" at entry {report.first_bad_seq}" if report.first_bad_seq is not None else ""
        err_console.print(f"[bold red]ledger BROKEN[/]{where}: {report.reason}")
        raise typer.Exit(1)
