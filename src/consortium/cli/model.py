"""``consortium model``: download released models with their cards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consortium.cli.common import HubOpt, TokenOpt, call, console, user_client

app = typer.Typer(no_args_is_help=True, help="Download released models with their cards.")


@app.command("download")
def model_download(model_id: int, hub: HubOpt, token: TokenOpt = None,
                   out: Annotated[Path, typer.Option("--out", help="directory")] = Path("model")) -> None:
    """Download a model's weights (safetensors), card (JSON + Markdown) and files (e.g. samples.png)."""
    from consortium.model_files import download_model

    with user_client(hub, token) as client:
        paths = call(download_model, client, model_id, out)
    for kind, path in paths.items():
        console.print(f"{kind}: {path}")
