"""The table target: a data file as the node reads one it downloaded or was handed (open data versions, test
set tables): :func:`consortium.tables.load_table` with an inferred schema and its last column as the target,
the rows as training tensors, and a test set made of them (:func:`consortium.test_sets.from_table`).

The bytes are written to a file whose suffix follows their magic number: ``PK`` an ``.npz``, ``PAR1`` a
``.parquet``, anything else a ``.csv``. Refusals: :class:`~consortium.tables.DatasetError`,
:class:`~consortium.test_sets.TestSetError`.
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from consortium.bench.fuzz_targets import Target
from consortium.tables import DatasetError, load_table
from consortium.test_sets import TestSetError, from_table

_DIR = Path(tempfile.mkdtemp(prefix="consortium-fuzz-table-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)


def suffix(data: bytes) -> str:
    if data.startswith(b"PK"):
        return ".npz"
    if data.startswith(b"PAR1"):
        return ".parquet"
    return ".csv"


def check(data: bytes) -> None:
    path = _DIR / f"upload{suffix(data)}"
    path.write_bytes(data)
    try:
        try:
            loaded = load_table(path, None)
        except DatasetError:
            return
        assert loaded.rows >= 1 and loaded.schema.features
        target = loaded.schema.features[-1].name if len(loaded.schema.features) > 1 else None
        try:
            labelled = load_table(path, target)
        except DatasetError:
            return
        try:
            labelled.to_local_data(allow_missing=True)
            from_table(labelled)
        except (DatasetError, TestSetError):
            pass
        try:
            again = load_table(path, target, declared=labelled.schema)
        except DatasetError:
            pass
        else:
            assert again.sha256 == labelled.sha256, "a table hashes differently with its own declared schema"
    finally:
        os.unlink(path)


def seeds() -> dict[str, bytes]:
    frame = pd.DataFrame({"a": [1.5, 2.0, -3.25], "b": [1, 2, 3], "flag": [True, False, True],
                          "colour": ["red", "green", "red"], "label": [0, 1, 0]})
    parquet = io.BytesIO()
    frame.to_parquet(parquet, engine="pyarrow")
    npz = io.BytesIO()
    np.savez(npz, x=np.arange(12, dtype=np.float32).reshape(3, 4), y=np.array([0, 1, 0]))
    return {
        "numeric.csv": b"a,b,label\n1.5,2,0\n-3e5,4,1\n0.1,6,0\n",
        "mixed.csv": frame.to_csv(index=False).encode(),
        "missing.csv": b"a,b,label\n1,,0\n,2,1\n",
        "quoted.csv": b'name,"x,y",label\n"a ""b""",1,0\n',
        "semicolon.csv": b"a;b\n1;2\n",
        "duplicate-columns.csv": b"a,a,label\n1,2,3\n",
        "table.parquet": parquet.getvalue(),
        "arrays.npz": npz.getvalue(),
        "huge-int.csv": b"a,label\n99999999999999999999999,1\n",
    }


TARGETS = {"table": Target("table", __doc__ or "", check, seeds)}
