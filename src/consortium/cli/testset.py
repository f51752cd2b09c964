"""``consortium testset``: make the hub test set of a project from a table, checked against the project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consortium.cli.common import console, fail

app = typer.Typer(no_args_is_help=True, help="Make a project's hub test set from a table.")


@app.command("make")
def testset_make(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV, Parquet or .npz file")],
    target: Annotated[str, typer.Option("--target", help="label column")],
    spec_file: Annotated[Path | None, typer.Option(
        "--spec", exists=True, dir_okay=False,
        help="project spec JSON: the test set must fit its model (feature count, label range)")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="where to write it; default: the file's name with .testset.safetensors")] = None,
    categorical: Annotated[list[str] | None, typer.Option("--categorical", help="a feature column of categories")]
    = None,
) -> None:
    """Write the safetensors test set (x float32 [rows, features], y [rows]) of a table, with the same checks
    and column order as a node's data; with --spec, the project's model is run on it once to prove they fit."""
    from consortium.cli.project import read_spec
    from consortium.fl.core import FLError
    from consortium.fl.preprocessing import layout
    from consortium.plan import RunPlan
    from consortium.tables import feature_names, load_table
    from consortium.test_sets import TestSetError, from_table

    try:
        loaded = load_table(file, target, categorical=categorical or None)
        made = from_table(loaded)
    except (FLError, TestSetError) as exc:
        fail(str(exc))
    rows, width = made.data.x.shape
    note = ""
    if spec_file is not None:
        spec = read_spec(spec_file)
        try:
            if spec.preprocessing is not None:
                layout(spec.preprocessing, feature_names(loaded.schema))
            if spec.preprocessing is not None and spec.preprocessing.categorical:
                note = " (one-hot widths are known once the nodes' categories are counted: not checked here)"
            else:
                plan = RunPlan.of(spec).knowing(width, max(1, len(spec.datasets)))
                plan.scores(plan.init_params(), {}, made.data)
        except FLError as exc:
            fail(f"{file.name} does not fit the project in {spec_file.name}: {exc}")
    target_file = out or file.with_suffix(".testset.safetensors")
    target_file.write_bytes(made.payload)
    console.print(f"wrote {target_file}: {rows} rows, {width} features"
                  + (f", checked against {spec_file.name}{note}" if spec_file is not None else ""))
