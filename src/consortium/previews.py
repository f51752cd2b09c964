"""A picture of what a released model does (a GAN's sample grid), shared by real runs and simulations.

An algorithm opts in by being a :class:`~consortium.fl.capabilities.Previewer`; the image goes with the
model as ``samples.png`` and the model card links it.
"""

from __future__ import annotations

from typing import Any

from consortium.fl.capabilities import Previewer
from consortium.fl.core import FLError, Params
from consortium.images import encode_png

PREVIEW_FILE = "samples.png"
PREVIEW_MEDIA_TYPE = "image/png"


def preview_png(algorithm: Any, hp: Any, params: Params, seed: int) -> bytes | None:
    """The PNG of ``algorithm``'s preview of ``params`` (seeded), or None when it draws none or cannot."""
    if not isinstance(algorithm, Previewer):
        return None
    try:
        image = algorithm.preview(hp, {name: tensor.cpu() for name, tensor in params.items()}, seed)
    except FLError:
        return None
    return encode_png(image)


def markdown_section(file_name: str) -> list[str]:
    """The model card's lines that show the preview image stored next to the card as ``file_name``."""
    return ["", "## Samples", "", f"![generated samples]({file_name})"]
