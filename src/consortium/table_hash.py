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
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from consortium.protocol import ColumnSchema, DatasetSchema

NUMPY_DTYPES: dict[str, np.dtype] = {
    "int64": np.dtype("<i8"),
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "bool": np.dtype(np.bool_),
}
"""The little-endian numpy dtype of each numeric column dtype, as the canonical bytes write it."""
SPILL_READ = 4 << 20


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
        yield column_bytes(col, columns[col.name])


def column_bytes(col: ColumnSchema, values: np.ndarray) -> bytes:
    """The canonical bytes of ``values`` (some or all rows of column ``col``): a table read in batches hashes
    the same as one read whole when each column's batches are hashed in order."""
    if col.dtype == "string":
        return b"".join(s.encode("utf-8") + b"\x00" for s in values.ravel())
    if col.dtype == "bool":
        return np.ascontiguousarray(values, dtype=np.uint8).tobytes()
    arr = np.array(values, dtype=NUMPY_DTYPES[col.dtype], order="C", copy=True)
    if arr.dtype.kind == "f":
        arr[np.isnan(arr)] = np.nan
    return arr.tobytes()


def canonical_sha256(schema: DatasetSchema, columns: dict[str, np.ndarray]) -> str:
    """SHA-256 (hex) of the canonical byte form of ``columns`` under ``schema``."""
    digest = hashlib.sha256()
    for chunk in canonical_chunks(schema, columns):
        digest.update(chunk)
    return digest.hexdigest()


class StreamingTableHash:
    """The canonical SHA-256 of a table fed in batches of rows, in constant memory: the canonical form is
    column after column, so the first column goes straight into the digest and the others are spilled to
    files in ``spill_dir`` (deleted by :meth:`hexdigest` or :meth:`close`) and appended in order at the end."""

    def __init__(self, schema: DatasetSchema, spill_dir: Path) -> None:
        self.columns = schema_columns(schema)
        self.rows = 0
        self._digest = hashlib.sha256(schema_header(schema))
        spill_dir.mkdir(parents=True, exist_ok=True)
        self._spills = [tempfile.TemporaryFile(dir=spill_dir) for _ in self.columns[1:]]

    def update(self, batch: dict[str, np.ndarray]) -> None:
        """Add the next rows (each column's values for the same rows, in the column's canonical dtype)."""
        first, *others = self.columns
        self._digest.update(column_bytes(first, batch[first.name]))
        for col, spill in zip(others, self._spills, strict=True):
            spill.write(column_bytes(col, batch[col.name]))
        self.rows += len(batch[first.name])

    def hexdigest(self) -> str:
        """The table's canonical SHA-256 (the spill files are read back once and deleted)."""
        for spill in self._spills:
            spill.seek(0)
            while chunk := spill.read(SPILL_READ):
                self._digest.update(chunk)
        self.close()
        return self._digest.hexdigest()

    def close(self) -> None:
        for spill in self._spills:
            spill.close()
        self._spills = []
