"""``consortium example``: example data to try a consortium with (no hub needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consortium.cli.common import console, fail

app = typer.Typer(no_args_is_help=True, help="Example data for a first consortium.")


@app.command("csv-shares")
def example_csv_shares(
    dataset: Annotated[str, typer.Option("--dataset", help="a bundled table: breast_cancer, iris, wine, digits")]
    = "breast_cancer",
    orgs: Annotated[int, typer.Option("--orgs", min=1, help="how many shares (one per org)")] = 4,
    out: Annotated[Path, typer.Option("--out", file_okay=False, help="directory for the CSV files")]
    = Path("shares"),
    target: Annotated[str, typer.Option("--target", help="name of the label column")] = "label",
    partition: Annotated[str, typer.Option("--partition", help="iid, dirichlet:ALPHA or shards:K, as in sim "
                                                               "run")] = "dirichlet:1.0",
    seed: Annotated[int, typer.Option("--seed", help="partition seed (the simulator's partition_seed)")] = 42,
) -> None:
    """Write uneven CSV shares of a bundled dataset (raw columns, one file per org: share-1.csv ...), the
    held-out test split (test.csv, with the label) and its rows without the label (new.csv). The shares are
    the simulator's clients for the same dataset, partition and seed."""
    import pandas as pd

    from consortium.fl.core import FLError
    from consortium.sim.shares import write_csv_shares

    try:
        paths = write_csv_shares(dataset, orgs, out, target=target, partition_kind=partition, partition_seed=seed)
    except FLError as exc:
        fail(str(exc))
    for name, path in paths.items():
        console.print(f"{name}: {path} ({len(pd.read_csv(path))} rows)", soft_wrap=True)
