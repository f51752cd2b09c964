"""``consortium credits``: balances, and one org's earns and spends (each a ledger entry)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from consortium.cli.common import (
    CaFileOpt,
    HubOpt,
    OptionalOrgDirOpt,
    TokenOpt,
    call,
    console,
    member_client,
    print_json,
)


def credits(
    hub: HubOpt,
    org: Annotated[str | None, typer.Argument(help="an org: its balance and history (default: every balance)")] = None,
    token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="movements shown")] = 20,
    before: Annotated[int | None, typer.Option("--before", min=1, help="page back from this ledger seq")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ca_file: CaFileOpt = None,
) -> None:
    """Credit balances, or one org's balance with its newest movements."""
    with member_client(hub, token, org_dir, ca_file) as client:
        data = call(client.credit_balances) if org is None else call(client.credit_account, org, limit, before)
    if as_json:
        print_json(data)
        return
    if org is None:
        table = Table("org", "balance")
        for row in data:
            table.add_row(row["org"], str(row["balance"]))
    else:
        console.print(f"{data['org']}: balance {data['balance']}")
        table = Table("ledger seq", "amount", "reason", "reference", "at")
        for row in data["history"]:
            table.add_row(str(row["ledger_seq"]), f"{row['amount']:+d}", row["reason"], row["reference"],
                          row["created_at"][:19])
    console.print(table)
