"""The canonical form of a table and its SHA-256: the same rows hash the same whatever the file format.

Canonical form (version 1)
--------------------------
The hash does not depend on the file format, so the same table saved as CSV, as Parquet or as NPZ arrays
hashes the same. The canonical bytes are:

1. a header: ``json.dumps(schema.model_dump(mode="json", exclude_none=True), sort_keys=True,
   separators=(",", ":"), ensure_ascii=False)`` encoded as UTF-8 (the schema includes the target, the
   column order and the per-example shapes);
2. then, for each column in schema order (the features, then the target), all its values, row by row
   (C order within an example for shaped columns), as

   * ``int64``: 8-byte little-endian two's complement,
   * ``float64`` / ``float32``: 8- / 4-byte little-endian IEEE 754; every NaN is written as the
     standard quiet NaN (``0x7ff8000000000000`` / ``0x7fc00000``),
   * ``bool``: one byte, 0 or 1,
   * ``string``: the UTF-8 bytes of the value followed by one ``\\x00`` byte (values may not contain
     NUL; a missing string is the empty string).

The dataset's ``sha256`` is the SHA-256 of those bytes, hex encoded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import numpy as np

from consortium.protocol import ColumnSchema, DatasetSchema

NUMPY_DTYPES: dict[str, np.dtype] = {
    "int64": np.dtype("<i8"),
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "bool": np.dtype(np.bool_),
}
"""The little-endian numpy dtype of each numeric column dtype, as the canonical bytes write it."""


def schema_header(schema: DatasetSchema) -> bytes:
    """The canonical JSON header of a schema (sorted keys, no spaces, UTF-8)."""
    body = schema.model_dump(mode="json", exclude_none=True)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def schema_columns(schema: DatasetSchema) -> list[ColumnSchema]:
    """The schema's columns in canonical order: the features, then the target."""
    return [*schema.features, *([schema.target] if schema.target is not None else [])]


def canonical_chunks(schema: DatasetSchema, columns: dict[str, np.ndarray]) -> Iterator[bytes]:
    """The canonical byte form of a dataset (see the module docstring), as a sequence of chunks."""
    yield schema_header(schema)
    for col in schema_columns(schema):
        values = columns[col.name]
        if col.dtype == "string":
            yield b"".join(s.encode("utf-8") + b"\x00" for s in values.ravel())
        elif col.dtype == "bool":
            yield np.ascontiguousarray(values, dtype=np.uint8).tobytes()
        else:
            arr = np.array(values, dtype=NUMPY_DTYPES[col.dtype], order="C", copy=True)
            if arr.dtype.kind == "f":
                arr[np.isnan(arr)] = np.nan
            yield arr.tobytes()


def canonical_sha256(schema: DatasetSchema, columns: dict[str, np.ndarray]) -> str:
    """SHA-256 (hex) of the canonical byte form of ``columns`` under ``schema``."""
    digest = hashlib.sha256()
    for chunk in canonical_chunks(schema, columns):
        digest.update(chunk)
    return digest.hexdigest()
