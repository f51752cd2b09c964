"""A registered table read in batches of rows (constant memory whatever its size) and written as canonical
CSV in the same pass, with both hashes: the table's canonical hash (checked against the card) and the
file's SHA-256.

Each batch goes through the same column conversion as :func:`consortium.tables.load_table` (CSV through
pandas' parser in chunks, Parquet through pyarrow's batches), so a batch means the same rows to both; an
``.npz`` file cannot be read in parts and is read whole.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from consortium.node.canonical_csv import format_rows, header_line
from consortium.protocol import DatasetSchema
from consortium.table_hash import StreamingTableHash, schema_columns
from consortium.tables import _CSV_FLOAT_OPTIONS, FORMATS, DatasetError, _canonical_column, load_table

BATCH_BYTES = 4 << 20
"""About how many bytes of the file one batch covers (the node's memory per batch is a small multiple)."""
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")


@dataclass(frozen=True)
class Export:
    """A table written as canonical CSV: its rows, the table's canonical hash, the file and its SHA-256 and
    size, and the columns kept whole (``keep``: e.g. for the anonymity gate). ``written``: the file was
    written for this export (False: it is the registered file itself, already canonical)."""

    rows: int
    table_sha256: str
    path: Path
    sha256: str
    size: int
    kept: dict[str, np.ndarray]
    written: bool = True

    def discard(self) -> None:
        """Remove the file if this export wrote it (a registered file is never removed)."""
        if self.written:
            self.path.unlink(missing_ok=True)


def _rows_per_batch(path: Path, rows: int) -> int:
    per_row = max(1, path.stat().st_size // max(rows, 1))
    return max(1_000, BATCH_BYTES // per_row)


def _csv_frames(path: Path, schema: DatasetSchema, batch_rows: int) -> Iterator[pd.DataFrame]:
    dtypes: dict[str, object] = {}
    for col in schema_columns(schema):
        if col.dtype == "string":
            dtypes[col.name] = str
        elif col.dtype in ("float64", "float32"):
            dtypes[col.name] = np.float64
        elif col.dtype == "int64":
            dtypes[col.name] = np.int64
    with pd.read_csv(path, dtype=dtypes, chunksize=batch_rows, **_CSV_FLOAT_OPTIONS) as reader:
        yield from reader


def _parquet_frames(path: Path, batch_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as parquet:
        for batch in parquet.iter_batches(batch_size=batch_rows):
            keep = [name for name in batch.schema.names if not _PANDAS_INDEX.fullmatch(name)]
            yield batch.select(keep).to_pandas()


def read_batches(path: Path, schema: DatasetSchema, rows: int) -> Iterator[dict[str, np.ndarray]]:
    """The file's rows in batches of canonical columns under its declared ``schema`` (``rows``: the card's
    count, to size the batches); DatasetError naming the file and column at fault."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt == "npz":
        yield load_table(path, None, declared=schema).columns
        return
    if fmt is None or not path.is_file():
        raise DatasetError(f"{path}: not a CSV or Parquet file (or no such file)")
    columns = schema_columns(schema)
    names = [col.name for col in columns]
    batch_rows = _rows_per_batch(path, rows)
    frames = _csv_frames(path, schema, batch_rows) if fmt == "csv" else _parquet_frames(path, batch_rows)
    try:
        for frame in frames:
            found = [str(c) for c in frame.columns]
            if sorted(found) != sorted(names):
                raise DatasetError(f"{path.name}: columns {found} are not the card's {names}")
            yield {col.name: _canonical_column(path, fmt, col.name, frame[col.name].reset_index(drop=True), col)[1]
                   for col in columns}
    except DatasetError:
        raise
    except Exception as exc:  # pandas and pyarrow raise many parser-specific types
        raise DatasetError(f"{path.name}: cannot read it as {fmt}: {exc}") from exc


def export_csv(path: Path, schema: DatasetSchema, rows: int, out: Path,
               keep: Sequence[str] = ()) -> Export:
    """Write the table in ``path`` as canonical CSV to ``out`` (atomically), hashing the table and the file
    in the same pass; shaped columns are refused. The caller compares ``table_sha256`` with the card."""
    columns = schema_columns(schema)
    for col in columns:
        if tuple(col.shape or ()) != ():
            raise DatasetError(f"column {col.name!r} holds arrays of shape {col.shape}; only flat tables are "
                               "published as CSV")
    partial = out.with_name(out.name + ".tmp")
    table = StreamingTableHash(schema, out.parent)
    digest = hashlib.sha256()
    kept: dict[str, list[np.ndarray]] = {name: [] for name in keep}
    try:
        with partial.open("wb") as f:
            head = header_line(columns)
            f.write(head)
            digest.update(head)
            for batch in read_batches(path, schema, rows):
                table.update(batch)
                for name, parts in kept.items():
                    parts.append(batch[name])
                data = format_rows(columns, batch)
                f.write(data)
                digest.update(data)
            size = f.tell()
        table_sha256 = table.hexdigest()
    except BaseException:
        table.close()
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    return Export(rows=table.rows, table_sha256=table_sha256, path=out, sha256=digest.hexdigest(), size=size,
                  kept={name: np.concatenate(parts) for name, parts in kept.items()})
