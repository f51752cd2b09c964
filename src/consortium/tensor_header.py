"""The JSON header of a safetensors payload, read without loading its tensors.

The ``safetensors`` library checks a header thoroughly when it loads the tensors, but it has no call that
reads only the header (``__metadata__``) of bytes in memory: the hub needs that to read an update's metadata,
and the node a task's. :func:`parse_header` does it as strictly as the library: a flat JSON object whose
``__metadata__`` maps strings to strings and whose other keys describe tensors (dtype, shape, data offsets
inside the payload), in a header of bounded size. Anything else is a ``ValueError`` saying what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from consortium import strict_json

MAX_HEADER_BYTES = 8 * 1024 * 1024
"""A task's header carries its project spec (a JSON body of at most a few MB); the library allows 100 MB."""
MAX_RANK = 32
METADATA_KEY = "__metadata__"
_DTYPE = re.compile(r"[A-Z][A-Z0-9_]{0,15}")
_TENSOR_KEYS = {"dtype", "shape", "data_offsets"}


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    data_offsets: tuple[int, int]


@dataclass(frozen=True)
class TensorHeader:
    metadata: dict[str, str]
    tensors: dict[str, TensorEntry]


def _invalid(reason: str) -> ValueError:
    return ValueError(f"not a valid safetensors payload: {reason}")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor(name: str, info: Any, data_bytes: int) -> TensorEntry:
    where = f"tensor {name[:60]!r}"
    if not isinstance(info, dict) or set(info) != _TENSOR_KEYS:
        raise _invalid(f"{where} must be an object with exactly dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or not _DTYPE.fullmatch(dtype):
        raise _invalid(f"{where} has a malformed dtype")
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(_is_count(d) for d in shape):
        raise _invalid(f"{where}: shape must be a list of at most {MAX_RANK} non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise _invalid(f"{where}: data_offsets must be two non-negative integers")
    begin, end = offsets
    if not begin <= end <= data_bytes:
        raise _invalid(f"{where}: data_offsets [{begin}, {end}] lie outside the {data_bytes} data bytes")
    return TensorEntry(dtype, tuple(shape), (begin, end))


def parse_header(data: bytes) -> TensorHeader:
    """The header of safetensors ``data``; ``ValueError`` naming the problem when it is not well formed."""
    if len(data) < 8:
        raise _invalid("shorter than its header length")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8:
        raise _invalid(f"header length {header_len} exceeds the {len(data) - 8} bytes that follow it")
    if header_len > MAX_HEADER_BYTES:
        raise _invalid(f"header of {header_len} bytes exceeds the limit of {MAX_HEADER_BYTES}")
    try:
        header = strict_json.loads(bytes(data[8 : 8 + header_len]), max_depth=3)
    except strict_json.StrictJSONError as exc:
        raise _invalid(f"header is not strict JSON of depth <= 3 ({exc.msg})") from None
    if not isinstance(header, dict):
        raise _invalid(f"header must be a JSON object, not {type(header).__name__}")
    metadata = header.pop(METADATA_KEY, None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _invalid(f"{METADATA_KEY} must be an object of strings")
    data_bytes = len(data) - 8 - header_len
    tensors = {name: _tensor(name, info, data_bytes) for name, info in header.items()}
    return TensorHeader(metadata, tensors)
