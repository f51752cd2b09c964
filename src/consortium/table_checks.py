"""Checks of a table's values that reading and training share: missing values and string categories
(:mod:`consortium.tables` reads the files; its :class:`DatasetError` is defined here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from consortium.fl import categories
from consortium.fl.core import FLError


class DatasetError(FLError):
    """A data file, schema or registration problem; the message names the file, column or field at fault."""


def reject_missing(values: np.ndarray, path: Path, name: str, role: str) -> None:
    """A NaN in a number column or an empty string in a string column is a missing value (an empty cell)."""
    if values.dtype.kind == "f":
        missing = np.isnan(values.reshape(values.shape[0], -1)).any(axis=1)
    elif values.dtype == np.dtype(object):
        missing = np.array([v == "" for v in values.reshape(values.shape[0], -1)[:, 0]], dtype=bool)
    else:
        return
    if missing.any():
        row = int(np.argmax(missing)) + 1
        raise DatasetError(
            f"{path.name}: {role} column '{name}' has {int(missing.sum())} missing value(s) (empty cells or "
            f"NaN), first in row {row}; fill or drop them, or (features) register with --allow-missing for a "
            "project whose preprocessing imputes them"
        )


def codes(values: np.ndarray, path: Path, name: str) -> tuple[np.ndarray, dict[float, str]]:
    """The codes of a string column and their text (:mod:`consortium.fl.categories`), as a DatasetError."""
    try:
        return categories.encode(values.ravel().tolist(), f"{path.name}: column '{name}'")
    except FLError as exc:
        raise DatasetError(str(exc)) from exc
