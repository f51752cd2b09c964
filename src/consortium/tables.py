"""Tables: read a data file (CSV, Parquet, NPZ) into typed columns, check it against a schema, hash its rows.

The node publishes a dataset as a card built from a :class:`LoadedDataset` (schema, row count and the SHA-256
of the rows' canonical form, see :mod:`consortium.table_hash`), and the simulator reads ``file:`` datasets
with the same code, so a file means the same rows to both.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import ValidationError

from consortium.fl.core import LocalData
from consortium.fl.preprocessing import feature_names_of
from consortium.protocol import ColumnSchema, DatasetSchema
from consortium.table_checks import DatasetError, codes, reject_missing
from consortium.table_hash import NUMPY_DTYPES, canonical_sha256, schema_columns

FileFormat = Literal["csv", "parquet", "npz"]
Dtype = Literal["int64", "float64", "float32", "bool", "string"]

DTYPES: tuple[str, ...] = ("int64", "float64", "float32", "bool", "string")
FORMATS: dict[str, FileFormat] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}
_INT64_MAX = np.iinfo(np.int64).max
# Floats must parse back bit-exactly for CSV and Parquet copies to hash the same. pandas 3's default parser
# round-trips exactly (and deprecates the option); older pandas needs the round-trip parser asked for.
_CSV_FLOAT_OPTIONS: dict[str, Any] = (
    {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
)


# ---------------------------------------------------------------------------------------------- loaded data


@dataclass(frozen=True, eq=False)
class LoadedDataset:
    """A data file read into canonical columns, with its schema, row count and canonical SHA-256.

    ``columns`` maps each column name (features and target) to a numpy array of shape ``[rows, *shape]``
    in the column's canonical dtype (strings as an object array of ``str``).
    """

    schema: DatasetSchema
    rows: int
    sha256: str
    format: FileFormat
    path: Path
    columns: dict[str, np.ndarray] = field(repr=False)

    def check_trainable(self, allow_missing: bool = False) -> None:
        """Refuse, naming the column and row, what training would refuse: a string feature not declared
        categorical, a missing value (an empty cell) in any column (in a feature column only when not
        ``allow_missing``: a spec that imputes fills them), a string target. ``dataset add`` runs it before
        anything is registered; :meth:`to_local_data` runs the same checks."""
        categorical = set(self.schema.categorical or ())
        for col in self.schema.features:
            values = self.columns[col.name]
            if col.dtype == "string" and col.name not in categorical:
                raise DatasetError(f"{self.path.name}: feature column '{col.name}' is a string; encode it "
                                   f"numerically or declare it categorical (--categorical {col.name})")
            if col.dtype == "string":
                codes(values, self.path, col.name)
            if not allow_missing:
                reject_missing(values, self.path, col.name, "feature")
        target = self.schema.target
        if target is None:
            return
        if target.dtype == "string":
            raise DatasetError(f"{self.path.name}: target column '{target.name}' is a string; encode it numerically")
        reject_missing(self.columns[target.name], self.path, target.name, "target")

    def to_local_data(self, allow_missing: bool = False) -> LocalData:
        """The rows as tensors for training, after :meth:`check_trainable`.

        ``x`` is float32 ``[rows, n]``: the numeric feature columns in schema order, each flattened per
        example (bools as 0/1); with ``allow_missing`` a missing feature value is NaN, for the spec's
        preprocessing to impute. ``y`` is the target as int64 when its values are integers (integral floats
        included), float32 otherwise, or None when the dataset has no target. A categorical string column
        holds each category's code (:mod:`consortium.fl.categories`; missing: NaN), for the one-hot encoding.
        """
        self.check_trainable(allow_missing)
        parts: list[np.ndarray] = []
        for col in self.schema.features:
            values = self.columns[col.name]
            values = codes(values, self.path, col.name)[0] if col.dtype == "string" else values
            parts.append(values.reshape(self.rows, -1).astype(np.float32))
        x = torch.from_numpy(np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32))
        target = self.schema.target
        if target is None:
            return LocalData(x=x, y=None)
        values = self.columns[target.name]
        if target.dtype in ("int64", "bool"):
            y = torch.from_numpy(values.astype(np.int64))
        else:
            integral = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
            if integral and np.all(np.abs(values) <= 2**53):
                y = torch.from_numpy(values.astype(np.int64))
            else:
                y = torch.from_numpy(values.astype(np.float32))
        return LocalData(x=x, y=y)

    def category_labels(self) -> dict[str, dict[float, str]]:
        """Each string feature column's category codes and their text."""
        return {c.name: codes(self.columns[c.name], self.path, c.name)[1]
                for c in self.schema.features if c.dtype == "string"}


def feature_names(schema: DatasetSchema) -> list[str]:
    """Names of the training matrix's columns (:func:`consortium.fl.preprocessing.feature_names_of`)."""
    return feature_names_of([(c.name, math.prod(c.shape or [1])) for c in schema.features])


# ---------------------------------------------------------------------------------------------- reading files


def load_table(
    path: str | os.PathLike[str], target: str | None, declared: DatasetSchema | None = None,
    categorical: Sequence[str] | None = None,
) -> LoadedDataset:
    """Read a ``.csv``, ``.parquet`` or ``.npz`` file into a :class:`LoadedDataset`.

    ``target`` names the label column (None: unsupervised, every column is a feature). In an ``.npz`` file
    every array is a column: the first dimension is the row, the rest is the per-example shape.

    With ``declared``, the file must hold exactly the declared columns (any order) with compatible values
    (integers are accepted in float columns, nothing else is converted); the result uses the declared
    column order and dtypes. Without it the schema is inferred: int64, float64, bool or string (float32
    arrays in ``.npz`` stay float32). ``categorical`` names the feature columns declared categorical (default:
    the declared schema's); they go into the schema. Raises :class:`DatasetError` naming the file and column
    at fault.
    """
    file = Path(path)
    fmt = FORMATS.get(file.suffix.lower())
    if fmt is None:
        raise DatasetError(
            f"{file.name}: unsupported file type {file.suffix or '(no suffix)'!r}; use .csv, .parquet or .npz"
        )
    if not file.is_file():
        raise DatasetError(f"{file}: no such file")
    target = _resolve_target(file, target, declared)
    raw = _read_npz(file) if fmt == "npz" else _read_frame(file, fmt, declared)
    if not raw:
        raise DatasetError(f"{file.name}: the file has no columns")
    rows = next(iter(raw.values())).shape[0]
    if rows == 0:
        raise DatasetError(f"{file.name}: the file has no rows")
    if target is not None and target not in raw:
        raise DatasetError(f"{file.name}: target column '{target}' not in file; columns: {_listing(raw)}")
    if declared is not None:
        _check_declared_names(file, raw, declared)
        order = [c.name for c in schema_columns(declared)]
        wanted: dict[str, ColumnSchema | None] = {c.name: c for c in schema_columns(declared)}
    else:
        order = [name for name in raw if name != target] + ([target] if target is not None else [])
        wanted = dict.fromkeys(order)
    columns: dict[str, np.ndarray] = {}
    specs: dict[str, ColumnSchema] = {}
    try:
        for name in order:
            dtype, values = _canonical_column(file, fmt, name, raw[name], wanted[name])
            columns[name] = values
            specs[name] = ColumnSchema(name=name, dtype=dtype, shape=list(values.shape[1:]) or None)
        features = [specs[name] for name in order if name != target]
        if not features:
            raise DatasetError(f"{file.name}: no feature columns besides the target '{target}'")
        chosen = _categorical(file, categorical if categorical is not None else
                              (declared.categorical if declared is not None else None), features)
        schema = DatasetSchema(features=features, target=specs[target] if target is not None else None,
                               categorical=chosen)
    except ValidationError as exc:  # a column name, shape or count that no dataset schema allows
        error = exc.errors(include_url=False)[0]
        raise DatasetError(f"{file.name}: {exc.title}.{'.'.join(map(str, error['loc']))}: {error['msg']} "
                           f"(found {str(error.get('input'))[:60]!r})") from None
    return LoadedDataset(
        schema=schema,
        rows=int(rows),
        sha256=canonical_sha256(schema, columns),
        format=fmt,
        path=file.resolve(),
        columns=columns,
    )


def _categorical(file: Path, names: Sequence[str] | None, features: list[ColumnSchema]) -> list[str] | None:
    """The declared categorical columns, sorted; each must be a feature column."""
    if not names:
        return None
    known = {c.name for c in features}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DatasetError(f"{file.name}: categorical column(s) {_quoted(unknown)} are not feature columns "
                           f"(features: {_listing(c.name for c in features)})")
    return sorted(set(names))


def _resolve_target(file: Path, target: str | None, declared: DatasetSchema | None) -> str | None:
    if declared is None:
        return target
    declared_target = declared.target.name if declared.target is not None else None
    if target is None:
        return declared_target
    if declared_target is None:
        raise DatasetError(f"{file.name}: target column '{target}' given but the declared schema has no target")
    if declared_target != target:
        raise DatasetError(f"{file.name}: target column '{target}' given but the declared schema's target is "
                           f"'{declared_target}'")
    return target


def _check_declared_names(file: Path, raw: dict[str, Any], declared: DatasetSchema) -> None:
    names = [c.name for c in schema_columns(declared)]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DatasetError(f"declared schema lists column(s) {_quoted(duplicated)} more than once")
    missing = [n for n in names if n not in raw]
    extra = [n for n in raw if n not in names]
    problems = []
    if missing:
        problems.append(f"declared column(s) {_quoted(missing)} missing from the file")
    if extra:
        problems.append(f"column(s) {_quoted(extra)} in the file are not in the declared schema")
    if problems:
        raise DatasetError(
            f"{file.name}: {'; '.join(problems)} (file columns: {_listing(raw)}; declared: {_listing(names)})"
        )


def _quoted(names: Sequence[str]) -> str:
    return _listing([f"'{n}'" for n in names])


def _listing(names: Iterable[str], limit: int = 20) -> str:
    """Comma-separated names, cut after ``limit`` so a wide file does not flood the message."""
    items = list(names)
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... ({len(items) - limit} more)"


def _read_frame(file: Path, fmt: FileFormat, declared: DatasetSchema | None) -> dict[str, pd.Series]:
    try:
        if fmt == "csv":
            if file.stat().st_size == 0:
                raise DatasetError(f"{file.name}: the file is empty")
            as_text = (
                {c.name: str for c in schema_columns(declared) if c.dtype == "string"} if declared else None
            )
            frame = pd.read_csv(file, dtype=as_text, **_CSV_FLOAT_OPTIONS)
        else:
            frame = pd.read_parquet(file, engine="pyarrow")
    except DatasetError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"{file.name}: the file is empty") from exc
    except Exception as exc:  # pandas and pyarrow raise many parser-specific types
        raise DatasetError(f"{file.name}: cannot read it as {fmt}: {exc}") from exc
    names = [str(c) for c in frame.columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DatasetError(f"{file.name}: column name(s) {_quoted(duplicated)} appear more than once")
    return {str(name): frame[name].reset_index(drop=True) for name in frame.columns}


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    if file.stat().st_size == 0:
        raise DatasetError(f"{file.name}: the file is empty")
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as exc:
        raise DatasetError(
            f"{file.name}: an array holds Python objects, which are not allowed: {exc}"
        ) from exc
    except Exception as exc:  # a bad zip, a truncated member...
        raise DatasetError(f"{file.name}: cannot read it as npz: {exc}") from exc
    lengths = {}
    for name, arr in arrays.items():
        if arr.ndim == 0:
            raise DatasetError(
                f"{file.name}: array '{name}' is a scalar; every array needs one row per example"
            )
        lengths[name] = arr.shape[0]
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"'{n}': {k}" for n, k in lengths.items())
        raise DatasetError(f"{file.name}: arrays have different numbers of rows (first dimension): {detail}")
    return arrays


# ---------------------------------------------------------------------------------------------- column typing


def _kind(values: pd.Series | np.ndarray) -> tuple[str, Any]:
    """Classify raw values as int, float, bool, string or other (with the offending type as detail)."""
    dtype = values.dtype
    if isinstance(values, np.ndarray):
        if dtype.kind in "iu":
            return "int", None
        if dtype.kind == "f":
            return "float", None
        if dtype.kind == "b":
            return "bool", None
        if dtype.kind in "US":
            return "string", None
        return "other", str(dtype)
    if isinstance(dtype, pd.CategoricalDtype):
        return _kind(values.astype(object))
    if pd.api.types.is_bool_dtype(dtype):
        return "bool", None
    if pd.api.types.is_integer_dtype(dtype):
        return "int", None
    if pd.api.types.is_float_dtype(dtype):
        return "float", None
    if isinstance(dtype, pd.StringDtype):
        return "string", None
    if dtype == np.dtype(object):
        present = [v for v in values.tolist() if not _is_missing(v)]
        if all(isinstance(v, str) for v in present):
            return "string", None
        if present and len(present) == len(values) and all(isinstance(v, (bool, np.bool_)) for v in present):
            return "bool", None
        odd = next((v for v in present if not isinstance(v, str)), None)
        return "other", type(odd).__name__
    return "other", str(dtype)


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _canonical_column(
    file: Path, fmt: FileFormat, name: str, raw: pd.Series | np.ndarray, declared: ColumnSchema | None
) -> tuple[Dtype, np.ndarray]:
    """Convert one raw column to its canonical dtype, checking it against the declared column if any."""
    kind, detail = _kind(raw)
    where = f"{file.name}: column '{name}'"
    shape = list(raw.shape[1:]) if isinstance(raw, np.ndarray) else []
    if declared is not None and (declared.shape or []) != shape:
        found = f"shape {shape}" if shape else "one value per row"
        raise DatasetError(f"{where} is declared with shape {declared.shape or []} but the file has {found}")
    if kind == "other":
        raise DatasetError(
            f"{where} holds values of unsupported type {detail}; supported: {', '.join(DTYPES)}"
        )
    if declared is None:
        if kind == "float":
            dtype: Dtype = "float32" if fmt == "npz" and raw.dtype == np.float32 else "float64"
        else:
            dtype = {"int": "int64", "bool": "bool", "string": "string"}[kind]  # type: ignore[assignment]
    else:
        dtype = declared.dtype
        allowed = {
            "int64": ("int",),
            "float64": ("int", "float"),
            "float32": ("int", "float"),
            "bool": ("bool",),
            "string": ("string",),
        }[dtype]
        if kind not in allowed:
            raise DatasetError(f"{where} is declared {dtype} but {_found(raw, kind, dtype)}")
    return dtype, _convert(where, raw, kind, dtype)


def _found(raw: pd.Series | np.ndarray, kind: str, dtype: str) -> str:
    """Describe what a column holds instead of ``dtype``, with the first offending value and its row."""
    if isinstance(raw, np.ndarray):
        values = raw.reshape(raw.shape[0], -1)[:, 0].tolist() if raw.size else []
    else:
        values = raw.tolist()
    label = {"int": "integer", "float": "float", "bool": "bool", "string": "string"}[kind]
    index = 0
    if kind == "string" and dtype in ("int64", "float64", "float32"):
        index = next((i for i, v in enumerate(values) if not _is_number(v)), 0)
    elif kind == "float" and dtype == "int64":
        for i, v in enumerate(values):
            if _is_missing(v):
                return f"has a missing value in row {i + 1}"
            if float(v) != round(float(v)):
                index = i
                break
    if not values:
        return f"found {label} values"
    example = values[index]
    if isinstance(example, bytes):
        example = example.decode("utf-8", "replace")
    return f"found {label} values (e.g. {example!r} in row {index + 1})"


def _is_number(value: Any) -> bool:
    if _is_missing(value):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _convert(where: str, raw: pd.Series | np.ndarray, kind: str, dtype: Dtype) -> np.ndarray:
    if isinstance(raw, pd.Series):
        if dtype == "string":
            values = np.array(["" if _is_missing(v) else str(v) for v in raw.tolist()], dtype=object)
        else:
            missing = raw.isna().to_numpy()
            if missing.any() and dtype in ("int64", "bool"):
                raise DatasetError(
                    f"{where} ({dtype}) has a missing value in row {int(np.argmax(missing)) + 1}"
                )
            unsigned = pd.api.types.is_unsigned_integer_dtype(raw.dtype)
            if unsigned and dtype == "int64" and len(raw) and int(raw.max()) > _INT64_MAX:
                raise DatasetError(f"{where} has values larger than the int64 maximum")
            if dtype == "bool" and raw.dtype == np.dtype(object):
                values = np.array([bool(v) for v in raw.tolist()], dtype=np.bool_)
            else:
                fill = {"na_value": np.nan} if dtype in ("float64", "float32") else {}
                values = raw.to_numpy(dtype=NUMPY_DTYPES[dtype], **fill)
    else:
        if dtype == "string":
            text = raw.astype(str) if raw.dtype.kind == "U" else np.char.decode(raw, "utf-8")
            values = np.empty(text.shape, dtype=object)
            values[...] = text.tolist() if text.ndim else text.item()
        else:
            if raw.dtype.kind == "u" and raw.size and int(raw.max()) > _INT64_MAX:
                raise DatasetError(f"{where} has values larger than the int64 maximum")
            values = np.ascontiguousarray(raw, dtype=NUMPY_DTYPES[dtype])
    if dtype == "string" and any("\x00" in s for s in values.ravel()):
        raise DatasetError(f"{where} contains a NUL character, which strings may not hold")
    return values
