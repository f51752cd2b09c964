"""Writing a released model to disk: weights (safetensors, hash-checked) and card (JSON + Markdown)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from consortium.client import HubClient


def download_model(client: HubClient, model_id: int, out_dir: Path) -> dict[str, Path]:
    """Fetch weights and card into ``out_dir``; refuses weights whose SHA-256 differs from the card's."""
    model = client.model(model_id)
    weights = client.model_weights(model_id)
    digest = hashlib.sha256(weights).hexdigest()
    if digest != model["params_sha256"]:
        raise ValueError(f"downloaded weights hash to {digest}, the card says {model['params_sha256']}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "weights": out_dir / "model.safetensors",
        "card": out_dir / "model_card.json",
        "card_markdown": out_dir / "MODEL_CARD.md",
    }
    paths["weights"].write_bytes(weights)
    paths["card"].write_text(json.dumps(model["card"], indent=2) + "\n")
    paths["card_markdown"].write_text(client.model_card_markdown(model_id))
    return paths
