"""Writing a released model to disk: weights (safetensors, hash-checked), card (JSON + Markdown) and the
files the card lists (e.g. a GAN's sample grid, hash-checked)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from consortium.client import HubClient

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model_card.json"
CARD_MARKDOWN_FILE = "MODEL_CARD.md"
"""The names of a model's files on disk, the same from ``model download`` and from the simulator."""

SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def download_model(client: HubClient, model_id: int, out_dir: Path) -> dict[str, Path]:
    """Fetch weights, card and the card's files into ``out_dir``; refuses any whose SHA-256 differs from the
    card's."""
    model = client.model(model_id)
    weights = client.model_weights(model_id)
    digest = hashlib.sha256(weights).hexdigest()
    if digest != model["params_sha256"]:
        raise ValueError(f"downloaded weights hash to {digest}, the card says {model['params_sha256']}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "weights": out_dir / WEIGHTS_FILE,
        "card": out_dir / CARD_FILE,
        "card_markdown": out_dir / CARD_MARKDOWN_FILE,
    }
    paths["weights"].write_bytes(weights)
    paths["card"].write_text(json.dumps(model["card"], indent=2) + "\n")
    paths["card_markdown"].write_text(client.model_card_markdown(model_id))
    for entry in model["card"].get("files", []):
        paths[entry["name"]] = _download_file(client, model_id, entry, out_dir)
    return paths


def _download_file(client: HubClient, model_id: int, entry: dict, out_dir: Path) -> Path:
    """One file the card lists (e.g. ``samples.png``), hash-checked, written next to the card."""
    name = entry["name"]
    if not SAFE_FILE_NAME.fullmatch(name):
        raise ValueError(f"the card lists a file named {name!r}, which is not a plain file name")
    data = client.model_file(model_id, name)
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise ValueError(f"downloaded {name} hashes to {digest}, the card says {entry['sha256']}")
    path = out_dir / name
    path.write_bytes(data)
    return path
