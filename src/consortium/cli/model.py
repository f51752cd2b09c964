"""``consortium model``: the model registry, and downloading models with their cards."""

from __future__ import annotations

import json
from pathlib import Path
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
    fail,
    member_client,
    user_client,
)

app = typer.Typer(no_args_is_help=True, help="List models (versions, releases, licences) and download them.")


@app.command("list")
def model_list(
    hub: HubOpt, token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None,
    project: Annotated[str | None, typer.Option("--project", help="the project's name")] = None,
    status: Annotated[str | None, typer.Option("--status", help="trained or released")] = None,
    licence: Annotated[str | None, typer.Option("--licence", help="part of the licence, or an SPDX "
                                                                  "expression")] = None,
    org: Annotated[str | None, typer.Option("--org", help="a participating organisation")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 100,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    ca_file: CaFileOpt = None,
) -> None:
    """The models you may see: each project's versions, their status, licence and obligations."""
    with member_client(hub, token, org_dir, ca_file) as client:
        rows = call(client.list_models, project=project, status=status, licence=licence, org=org, limit=limit,
                    offset=offset)
    table = Table("id", "project", "version", "status", "licence", "obligations", "participants", "created",
                  "released")
    for m in rows:
        obligations = ", ".join(name for name, terms in m["obligations"].items() if terms) or "-"
        table.add_row(str(m["id"]), m["project"], str(m["version"] or "-"), m["status"], m["license"],
                      obligations, ", ".join(m["card"].get("participating_orgs", [])), m["created_at"][:19],
                      (m["released_at"] or "-")[:19])
    console.print(table)


@app.command("download")
def model_download(model_id: int, hub: HubOpt, token: TokenOpt = None,
                   out: Annotated[Path, typer.Option("--out", help="directory")] = Path("model"),
                   ca_file: CaFileOpt = None) -> None:
    """Download a model's weights (safetensors), card (JSON + Markdown) and files (e.g. samples.png)."""
    from consortium.model_files import download_model

    with user_client(hub, token, ca_file) as client:
        paths = call(download_model, client, model_id, out)
    for kind, path in paths.items():
        console.print(f"{kind}: {path}")


@app.command("predict")
def model_predict(
    model: Annotated[str, typer.Argument(help="a directory `model download` (or `sim run --out`) wrote, or a "
                                              "model on the hub: its id or PROJECT[@VERSION]")],
    rows: Annotated[Path, typer.Option("--rows", exists=True, dir_okay=False, help="CSV or Parquet of new rows")],
    out: Annotated[Path | None, typer.Option("--out", dir_okay=False, help="predictions as .csv or .json "
                                                                          "(default: CSV on stdout)")] = None,
    ignore: Annotated[list[str] | None, typer.Option("--ignore", help="a column of the rows that is no feature "
                                                                      "(an id, the label); repeat for several")]
    = None,
    allow_unseen: Annotated[bool, typer.Option("--allow-unseen", help="encode a category never seen in training "
                                                                      "as all zeros instead of refusing")] = False,
    hub: Annotated[str | None, typer.Option("--hub", envvar="CONSORTIUM_HUB", help="hub base URL")] = None,
    token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None, ca_file: CaFileOpt = None,
) -> None:
    """Predict the class of new raw rows: the card's preprocessing (statistics fitted from the nodes' training
    rows) is applied to them first, as in training."""
    import pandas as pd

    from consortium.cli.audit import _model_id
    from consortium.model_files import download_model
    from consortium.predict import Model, PredictError, predict

    try:
        frame = pd.read_parquet(rows) if rows.suffix in (".parquet", ".pq") else pd.read_csv(rows)
    except Exception as exc:  # pandas raises many parser-specific types
        fail(f"--rows: cannot read {rows.name}: {exc}")
    if Path(model).is_dir():
        directory = Path(model)
    else:
        if hub is None:
            fail(f"MODEL: {model!r} is no directory; to fetch it from the hub give --hub (or CONSORTIUM_HUB)")
        with member_client(hub, token, org_dir, ca_file) as client:
            model_id = _model_id(client, model)
            directory = Path(f"model-{model_id}")
            call(download_model, client, model_id, directory)
    try:
        result = predict(Model.load(directory), frame, ignore or (), allow_unseen)
    except PredictError as exc:
        fail(str(exc))
    if out is None:
        print(result.to_csv(index=False), end="")
    elif out.suffix == ".json":
        out.write_text(json.dumps(result.to_dict(orient="records"), indent=1) + "\n")
    else:
        result.to_csv(out, index=False)
    if out is not None:
        counts = result["prediction"].value_counts().sort_index()
        console.print(f"wrote {len(result)} predictions to {out} ("
                      + ", ".join(f"class {k}: {n}" for k, n in counts.items()) + ")")
