"""The fast canonical CSV writer writes exactly what ``csv.writer`` writes for the cells of the canonical
form (floats as ``repr``, missing empty, ints in decimal, ``True``/``False``, strings quoted where CSV needs
it), for any float bit pattern, any int64, any string and any mix of columns."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.node.canonical_csv import format_rows, header_line
from consortium.protocol import ColumnSchema


def reference_cell(value: object, dtype: str) -> str:
    if dtype in ("float64", "float32"):
        number = float(value)  # type: ignore[arg-type]
        return "" if math.isnan(number) else repr(number)
    if dtype == "bool":
        return "True" if value else "False"
    if dtype == "int64":
        return str(int(value))  # type: ignore[call-overload]
    return str(value)


def reference(columns: list[ColumnSchema], batch: dict[str, np.ndarray]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for i in range(len(batch[columns[0].name])):
        writer.writerow([reference_cell(batch[c.name][i], c.dtype) for c in columns])
    return out.getvalue().encode("utf-8")


SPECIAL = [0.0, -0.0, math.nan, math.inf, -math.inf, 1e16, 9999999999999998.0, 1e-4, 9.999999999999999e-05,
           5e-324, 1.0, 1e15 + 0.5, 2.0**53 + 2, 1.7976931348623157e308, -1e-300, 123.0]
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(SPECIAL),
                   st.integers(0, 2**64 - 1).map(lambda bits: float(np.array([bits], np.uint64).view(np.float64)[0])))
cells = {
    "float64": floats,
    "float32": st.floats(width=32),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "bool": st.booleans(),
    "string": st.text(alphabet=st.sampled_from(list('ab ,"\n\r\té\u2028x')), max_size=6),
}
DTYPE = {"float64": np.float64, "float32": np.float32, "int64": np.int64, "bool": np.bool_, "string": object}


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[ColumnSchema], dict[str, np.ndarray]]:
    dtypes = draw(st.lists(st.sampled_from(list(cells)), min_size=1, max_size=4))
    rows = draw(st.integers(1, 30))
    columns = [ColumnSchema(name=f"c{i}", dtype=d) for i, d in enumerate(dtypes)]
    batch = {c.name: np.array(draw(st.lists(cells[c.dtype], min_size=rows, max_size=rows)), dtype=DTYPE[c.dtype])
             for c in columns}
    return columns, batch


@settings(max_examples=300, deadline=None)
@given(tables())
def test_the_fast_writer_writes_what_csv_writer_writes(table) -> None:
    columns, batch = table
    assert bytes(format_rows(columns, batch)) == reference(columns, batch)


def test_many_random_float_bit_patterns_format_as_repr() -> None:
    rng = np.random.default_rng(0)
    numbers = np.concatenate([rng.integers(0, 2**64, 50_000, dtype=np.uint64).view(np.float64),
                              rng.normal(size=50_000) * 10.0 ** rng.integers(-8, 20, 50_000), SPECIAL])
    column = [ColumnSchema(name="x", dtype="float64")]
    assert bytes(format_rows(column, {"x": numbers})) == reference(column, {"x": numbers})


def test_the_header_and_an_empty_batch() -> None:
    columns = [ColumnSchema(name="a,b", dtype="int64"), ColumnSchema(name="c", dtype="bool")]
    assert header_line(columns) == b'"a,b",c\n'
    assert bytes(format_rows(columns, {"a,b": np.array([], np.int64), "c": np.array([], bool)})) == b""
