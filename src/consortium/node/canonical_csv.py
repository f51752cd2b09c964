"""The canonical CSV of a batch of rows, column at a time (no Python loop over numbers): the same bytes as
``csv.writer`` writing each cell as the canonical form defines it (``tests/node/test_canonical_csv.py``
checks it against that), an order of magnitude faster than one ``repr`` per cell.

Numbers are formatted by ``orjson`` (shortest round-trip digits, as ``repr``): integers in decimal, floats
in ``repr``'s positional form for 1e-4 <= |x| < 1e16 and zero; the rest (NaN: empty, infinities, tiny and
huge values in ``repr``'s exponent form) are few and formatted by ``repr`` itself. Each column becomes an
Arrow string array whose values carry their separator (``,`` or the line end), and Arrow joins the columns
row by row. Strings go through the ``csv`` module's own quoting, value by value.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from consortium.protocol import ColumnSchema

_POSITIONAL = (1e-4, 1e16)
"""``repr`` writes a float in positional notation inside this range (and for zero), orjson too."""
_QUOTE_CHARS = frozenset(',"\r\n')


def header_line(columns: Sequence[ColumnSchema]) -> bytes:
    """The header: the column names, as ``csv.writer`` writes them."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([col.name for col in columns])
    return out.getvalue().encode("utf-8")


def _split_json(text: bytes, count: int, sep: str) -> pa.StringArray:
    """orjson's ``[a,b,c]`` of ``count`` numbers as the strings ``a<sep>``, ``b<sep>``, ``c<sep>``."""
    buf = np.frombuffer(text, dtype=np.uint8)[1:].copy()
    buf[-1] = ord(",")
    ends = np.flatnonzero(buf == ord(","))
    if len(ends) != count:
        raise ValueError(f"orjson wrote {len(ends)} numbers for {count}")
    if sep != ",":
        buf[ends] = ord(sep)
    offsets = np.zeros(count + 1, dtype=np.int32)
    offsets[1:] = ends + 1
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(buf))


def _floats(values: np.ndarray, sep: str) -> pa.Array:
    numbers = np.ascontiguousarray(values, dtype=np.float64)
    size = np.abs(numbers)
    with np.errstate(invalid="ignore"):
        odd = ~((size >= _POSITIONAL[0]) & (size < _POSITIONAL[1])) & (numbers != 0)
    if not odd.any():
        return _split_json(orjson.dumps(numbers, option=orjson.OPT_SERIALIZE_NUMPY), len(numbers), sep)
    clean = np.where(odd, 0.0, numbers)
    texts = _split_json(orjson.dumps(clean, option=orjson.OPT_SERIALIZE_NUMPY), len(numbers), sep)
    exact = [("" if math.isnan(x) else repr(x)) + sep for x in numbers[odd].tolist()]
    return pc.replace_with_mask(texts, pa.array(odd), pa.array(exact, pa.string()))


def _field(text: str) -> str:
    """One string cell as ``csv.writer`` writes it among others (quoted where CSV needs it)."""
    if text and not _QUOTE_CHARS.intersection(text) and not text[0].isspace() and not text[-1].isspace():
        return text
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([text, "x"])
    return out.getvalue()[:-3]


def _column(col: ColumnSchema, values: np.ndarray, sep: str) -> pa.Array:
    if col.dtype in ("float64", "float32"):
        return _floats(values, sep)
    if col.dtype == "int64":
        numbers = np.ascontiguousarray(values, dtype=np.int64)
        return _split_json(orjson.dumps(numbers, option=orjson.OPT_SERIALIZE_NUMPY), len(numbers), sep)
    if col.dtype == "bool":
        return pc.if_else(pa.array(np.asarray(values, dtype=np.bool_)), "True" + sep, "False" + sep)
    return pa.array([_field(str(v)) + sep for v in values.tolist()], pa.string())


def format_rows(columns: Sequence[ColumnSchema], batch: dict[str, np.ndarray]) -> memoryview:
    """The canonical CSV lines of a batch of rows (each column's values in its canonical dtype)."""
    if not columns or len(batch[columns[0].name]) == 0:
        return memoryview(b"")
    last = len(columns) - 1
    parts = [_column(col, batch[col.name], "\n" if i == last else ",") for i, col in enumerate(columns)]
    if len(parts) == 1:  # csv.writer quotes a row whose only field is empty
        joined = pc.if_else(pc.equal(parts[0], "\n"), '""\n', parts[0])
    else:
        joined = pc.binary_join_element_wise(*parts, "")
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)
    start, end = int(offsets[joined.offset]), int(offsets[joined.offset + len(joined)])
    return memoryview(joined.buffers()[2])[start:end]
