"""Hub test sets: what one is (safetensors with ``x`` float32 ``[n, features]`` and ``y`` ``[n]``), how one is
made from a table, and what is wrong with a file that is not one, said plainly (the feature count, the dtype,
the file type) instead of a parser's complaint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from consortium.codec import decode_tensors, encode_tensors, safetensors_metadata
from consortium.fl.core import LocalData

if TYPE_CHECKING:
    from consortium.tables import LoadedDataset

MAKE_HINT = "make one with `consortium testset make data.csv --target COLUMN --spec project.json`"


class TestSetError(ValueError):
    """A test set that is not one the project can use; the message says what is wrong."""

    __test__ = False


@dataclass(frozen=True)
class TestSet:
    """A checked test set: the rows and the canonical safetensors bytes (what the hub stores and hashes)."""

    __test__ = False

    data: LocalData
    payload: bytes


def file_kind(payload: bytes) -> str | None:
    """What a payload that is not safetensors looks like ("a CSV file", ...); None when it starts as one (an
    8-byte header length that fits, then the JSON header)."""
    header_length = int.from_bytes(payload[:8], "little")
    if len(payload) >= 9 and payload[8:9] == b"{" and header_length <= len(payload) - 8:
        return None
    head = payload[:512]
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (an .npz file?)"
    if head.startswith(b"PAR1"):
        return "a Parquet file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown kind"
    if text.lstrip().startswith(("{", "[")):
        return "a JSON file"
    return "a CSV file" if any(sep in text for sep in ",;\t") else "a text file"


def check_test_set(payload: bytes, width: int) -> TestSet:
    """The test set in ``payload`` for a project whose rows have ``width`` features; TestSetError naming what
    is wrong: not safetensors (and what it looks like instead), other tensors than ``x`` and ``y``, the number
    of features, x's dtype, y's shape, non-finite values."""
    if not payload:
        raise TestSetError(f"the test set is empty; {MAKE_HINT}")
    kind = file_kind(payload)
    if kind is not None:
        raise TestSetError(f"the test set is {kind}, not a safetensors file; {MAKE_HINT}")
    try:
        tensors = decode_tensors(payload)
    except ValueError as exc:
        raise TestSetError(f"the test set is not a valid safetensors file ({exc}); {MAKE_HINT}") from exc
    if set(tensors) != {"x", "y"}:
        raise TestSetError(f"the test set must hold exactly the tensors 'x' and 'y', got {sorted(tensors)}")
    x, y = tensors["x"], tensors["y"]
    if x.ndim != 2:
        raise TestSetError(f"test set x must be a matrix [rows, {width} features], got shape {list(x.shape)}")
    if x.shape[1] != width:
        raise TestSetError(
            f"test set x has {x.shape[1]} features per row, the project's datasets have {width}")
    if x.dtype != torch.float32:
        raise TestSetError(f"test set x is {str(x.dtype).removeprefix('torch.')}, it must be float32")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise TestSetError(f"test set y must be a vector of {x.shape[0]} labels (one per row of x), "
                           f"got shape {list(y.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise TestSetError("test set x contains NaN or infinite values")
    return TestSet(LocalData(x, y), encode_tensors({"x": x, "y": y}))


def from_table(loaded: LoadedDataset) -> TestSet:
    """The test set of a table read with its target (the checks and tensors of a node's training data)."""
    if loaded.schema.target is None:
        raise TestSetError("a test set needs labels: give the target column (--target)")
    data = loaded.to_local_data()
    return check_test_set(encode_tensors({"x": data.x, "y": data.y}), data.x.shape[1])


SPEC_KEY = "spec"
"""Where a proposal with its test set carries the project spec: the test set's ``__metadata__``."""


def bundle(spec_json: str, payload: bytes) -> bytes:
    """One upload proposing a project with its test set: the test set's tensors with the spec JSON under
    ``__metadata__['spec']``; TestSetError when ``payload`` is not a safetensors test set at all."""
    kind = file_kind(payload) if payload else "empty"
    if kind is not None:
        raise TestSetError(f"the test set is {kind}, not a safetensors file; {MAKE_HINT}")
    try:
        tensors = decode_tensors(payload)
    except ValueError as exc:
        raise TestSetError(f"the test set is not a valid safetensors file ({exc}); {MAKE_HINT}") from exc
    return encode_tensors(tensors, {SPEC_KEY: spec_json})


def unbundle(payload: bytes) -> tuple[str, bytes]:
    """The spec JSON and the test set (its tensors alone, re-encoded) of a :func:`bundle`."""
    try:
        spec_json = safetensors_metadata(payload).get(SPEC_KEY)
        tensors = decode_tensors(payload)
    except ValueError as exc:
        raise TestSetError(f"a proposal with its test set is a safetensors file: {exc}") from exc
    if spec_json is None:
        raise TestSetError(f"the upload carries no project spec (__metadata__['{SPEC_KEY}'])")
    return spec_json, encode_tensors(tensors)
