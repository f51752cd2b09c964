"""String categories as numbers: a categorical feature column of strings enters the feature matrix as a stable
code per category, the first 24 bits of the SHA-256 of its UTF-8 text (an integer below 2^24, exact in
float32), so every node, the simulator, the hub's test set and ``model predict`` give one category the same
code without sharing a vocabulary. The nodes send each code's text with their category counts; the fitted
one-hot encoding keeps both (``OneHotColumn.labels``), and two categories with one code are refused, naming
them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from consortium.fl.core import FLError

CODE_BITS = 24


def code_of(value: str) -> float:
    """The category's code: an integer in [0, 2^24) as a float."""
    digest = hashlib.sha256(value.encode("utf-8")).digest()
    return float(int.from_bytes(digest[:3], "big"))


def encode(values: Iterable[str], where: str) -> tuple[np.ndarray, dict[float, str]]:
    """The codes of ``values`` (float32; an empty string is missing: NaN) and each code's text; FLError
    naming ``where`` and both texts when two categories share a code."""
    texts = list(values)
    labels: dict[float, str] = {}
    for text in sorted(set(texts) - {""}):
        code = code_of(text)
        if labels.setdefault(code, text) != text:
            raise FLError(f"{where}: categories {labels[code]!r} and {text!r} have the same code; rename one")
    codes = np.array([np.nan if text == "" else code_of(text) for text in texts], dtype=np.float32)
    return codes, labels


def merge_labels(parts: Iterable[dict[float, str]], where: str) -> dict[float, str]:
    """One code -> text map from several; FLError naming ``where`` and both texts on a conflict."""
    merged: dict[float, str] = {}
    for labels in parts:
        for code, text in labels.items():
            if merged.setdefault(code, text) != text:
                raise FLError(f"{where}: categories {merged[code]!r} and {text!r} have the same code; rename one")
    return merged
