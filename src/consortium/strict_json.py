"""Strict JSON decoding for everything that arrives over the network.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``-Infinity``, turns ``1e400`` into infinity, keeps the
last of two equal keys, and lets through strings that no database can store (NUL, lone surrogates).
:func:`loads` refuses all of these, and nesting deeper than ``max_depth``, with a :class:`StrictJSONError` (a
``json.JSONDecodeError``, so callers that catch that keep working) that says what was wrong.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

DEFAULT_MAX_DEPTH = 64
_CONSTANT = re.compile(r"(?<![\w\".])(-?Infinity|NaN)(?![\w\"])")


class StrictJSONError(json.JSONDecodeError):
    """Not strict JSON; ``msg`` says why, ``pos`` where (0 when unknown)."""

    def where(self, width: int = 40) -> str:
        """The text just before the fault (which usually names the field), e.g. `` near '"loss": NaN'``."""
        if self.pos <= 0 or not self.doc:
            return ""
        return f" near {self.doc[max(0, self.pos - width): self.pos + 10]!r}"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (JSON has no NaN or infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is too large for a 64-bit float")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key {key[:60]!r} appears twice in one object")
            seen.add(key)
    return result


def _check_string(text: str) -> None:
    if "\x00" in text:
        raise ValueError("strings may not contain NUL (\\u0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("strings may not contain unpaired UTF-16 surrogates") from None


def _check_tree(value: Any, max_depth: int) -> None:
    """Depth and string checks without recursion (the depth is what is being checked)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_string(item)
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_string(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def loads(data: bytes | str, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode ``data`` as strict JSON (see the module docstring); :class:`StrictJSONError` otherwise."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    except UnicodeDecodeError as exc:
        raise StrictJSONError(f"not UTF-8: {exc.reason}", "", exc.start) from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                           object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise StrictJSONError(exc.msg, text, exc.pos) from None
    except RecursionError:
        raise StrictJSONError(f"nested deeper than {max_depth} levels", text, 0) from None
    except ValueError as exc:
        found = _CONSTANT.search(text)
        pos = found.start() if found and "JSON number" in str(exc) else 0
        raise StrictJSONError(str(exc), text, pos) from None
    try:
        _check_tree(value, max_depth)
    except ValueError as exc:
        raise StrictJSONError(str(exc), text, 0) from None
    return value
