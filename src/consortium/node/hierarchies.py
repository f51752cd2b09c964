"""Generalisation hierarchies the owner declares for quasi-identifiers (a JSON file, ``--hierarchies``).

Each hierarchy lifts a value through ``depth`` levels: level 0 is the value itself, level ``depth`` is ``*``
(everything merged). The file maps column names to one of three kinds::

    {"postcode":  {"type": "mask", "levels": 5},
     "age":       {"type": "intervals", "widths": [5, 10, 20]},
     "diagnosis": {"type": "tree", "parents": {"flu": ["respiratory", "infection"],
                                               "asthma": ["respiratory", "chronic"]}}}

- ``mask``: level i replaces the last i characters with ``*`` (``12345 -> 1234* -> 123** -> ... -> *``);
  ``levels`` is the depth.
- ``intervals``: numbers go to aligned intervals of growing width (``37 -> 35-39 -> 30-39 -> 20-39 -> *``);
  each width a multiple of the one before; depth ``len(widths) + 1``.
- ``tree``: each value lists its ancestors, nearest first, all lists of one length; depth that length + 1.
  A value of the table that the tree does not list is refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from consortium.node.anonymity import AnonymityError

TOP = "*"


class MaskHierarchy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["mask"]
    levels: int = Field(ge=1, le=64)

    @property
    def depth(self) -> int:
        return self.levels

    def at(self, value: object, level: int) -> str:
        text = str(value)
        if level >= self.levels or level >= len(text):
            return TOP if level else text
        return text[: len(text) - level] + "*" * level


class IntervalHierarchy(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    type: Literal["intervals"]
    widths: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, max_length=32)

    @model_validator(mode="after")
    def _nested(self) -> IntervalHierarchy:
        for small, big in zip(self.widths, self.widths[1:], strict=False):
            ratio = big / small
            if ratio < 2 or abs(ratio - round(ratio)) > 1e-9:
                raise ValueError(f"widths: {big:g} is not a multiple (at least 2x) of {small:g}")
        return self

    @property
    def depth(self) -> int:
        return len(self.widths) + 1

    def at(self, value: object, level: int) -> str:
        if level == 0:
            return f"{value:g}" if isinstance(value, float) else str(value)
        if level >= self.depth:
            return TOP
        number = float(value)  # type: ignore[arg-type]
        width = self.widths[level - 1]
        low = math.floor(number / width) * width
        whole = float(width).is_integer() and float(number).is_integer()
        return f"{low:g}-{low + width - 1:g}" if whole else f"[{low:g},{low + width:g})"


class TreeHierarchy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["tree"]
    parents: dict[str, list[Annotated[str, Field(min_length=1, max_length=200)]]] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_depth(self) -> TreeHierarchy:
        if len({len(chain) for chain in self.parents.values()}) != 1:
            raise ValueError("parents: every value lists the same number of ancestors")
        return self

    @property
    def depth(self) -> int:
        return len(next(iter(self.parents.values()))) + 1

    def at(self, value: object, level: int) -> str:
        text = str(value)
        if level == 0:
            return text
        if level >= self.depth:
            return TOP
        return self.parents[text][level - 1]


Hierarchy = Annotated[MaskHierarchy | IntervalHierarchy | TreeHierarchy, Field(discriminator="type")]
_FILE = TypeAdapter(dict[str, Hierarchy])


def parse(data: object) -> dict[str, Hierarchy]:
    """Hierarchies from decoded JSON; AnonymityError naming the field at fault."""
    try:
        return _FILE.validate_python(data)
    except ValidationError as exc:
        raise AnonymityError("hierarchies: " + "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())) from exc


def load(path: Path) -> dict[str, Hierarchy]:
    """Hierarchies from a JSON file (see the module)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AnonymityError(f"--hierarchies {path}: {exc}") from exc
    return parse(data)


def check_values(hierarchy: Hierarchy, column: str, values: list[object]) -> None:
    """AnonymityError naming the values of ``column`` a tree does not list (or an interval cannot take)."""
    if isinstance(hierarchy, TreeHierarchy):
        unknown = sorted({str(v) for v in values} - set(hierarchy.parents))
        if unknown:
            raise AnonymityError(f"hierarchy of {column!r} does not list {unknown[:10]}")
    if isinstance(hierarchy, IntervalHierarchy):
        try:
            [float(v) for v in values]  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise AnonymityError(f"hierarchy of {column!r}: intervals need numbers ({exc})") from exc
