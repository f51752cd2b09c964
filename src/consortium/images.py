"""PNG images (sample grids of generative models) as bytes or files: the I/O edge for pictures."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8:
        raise ValueError(f"a PNG image must be a uint8 array, got dtype {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ValueError(f"a PNG image must be [h, w] grey or [h, w, 3|4] colour, got shape {image.shape}")
    if 0 in image.shape:
        raise ValueError(f"a PNG image cannot be empty, got shape {image.shape}")


def encode_png(image: np.ndarray) -> bytes:
    """The PNG encoding of a uint8 image: [h, w] greyscale, [h, w, 3] RGB or [h, w, 4] RGBA."""
    _check_image(image)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write ``image`` (see :func:`encode_png`) to ``path`` as a PNG file; returns the path."""
    path = Path(path)
    path.write_bytes(encode_png(image))
    return path
