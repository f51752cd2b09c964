"""The Parquet rendering of a canonical CSV: read a block at a time (several row groups), typed by the card,
and it holds the same rows (missing numbers null, empty strings kept, quoted newlines kept)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from consortium.hub.services.open_data_parquet import arrow_schema, convert

SCHEMA = {"features": [{"name": "n", "dtype": "int64"}, {"name": "x", "dtype": "float32"},
                       {"name": "ok", "dtype": "bool"}, {"name": "note", "dtype": "string"}],
          "target": {"name": "y", "dtype": "float64"}}


def test_blocks_become_row_groups_with_the_cards_types(tmp_path: Path) -> None:
    rows = [[str(i), repr(float(np.float32(i / 3))), "True" if i % 2 else "False",
             "" if i % 7 == 0 else f"note, {i}\nline two", "" if i % 5 == 0 else repr(i * 0.25)]
            for i in range(3000)]
    source = tmp_path / "table.csv"
    with source.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["n", "x", "ok", "note", "y"])
        writer.writerows(rows)
    out = tmp_path / "table.parquet"
    convert(source, out, SCHEMA, block_bytes=16 << 10)
    found = pq.ParquetFile(out)
    assert found.metadata.num_row_groups > 1 and found.schema_arrow == arrow_schema(SCHEMA)
    table = found.read().to_pydict()
    assert table["n"] == list(range(3000))
    assert table["x"] == [float(np.float32(i / 3)) for i in range(3000)]
    assert table["ok"] == [bool(i % 2) for i in range(3000)]
    assert table["note"] == ["" if i % 7 == 0 else f"note, {i}\nline two" for i in range(3000)]
    assert table["y"] == [None if i % 5 == 0 else i * 0.25 for i in range(3000)]
