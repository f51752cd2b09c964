"""The node's local dataset layer: read a data file, check it against a schema, hash it, register it.

Rows never leave the node. What leaves is a :class:`~consortium.protocol.DatasetCardIn` built from a
:class:`LoadedDataset`: the schema, the row count and the SHA-256 of the data's *canonical form*.

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

import contextlib
import hashlib
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import save as save_tensors

from consortium.fl.core import FLError, LocalData
from consortium.protocol import NAME_PATTERN, ColumnSchema, DatasetCardIn, DatasetSchema, Visibility

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FileFormat = Literal["csv", "parquet", "npz"]
Dtype = Literal["int64", "float64", "float32", "bool", "string"]

DTYPES: tuple[str, ...] = ("int64", "float64", "float32", "bool", "string")
FORMATS: dict[str, FileFormat] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}
REGISTRY_FILE = "datasets.json"

_NUMPY_DTYPES: dict[str, np.dtype] = {
    "int64": np.dtype("<i8"),
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "bool": np.dtype(np.bool_),
}
_INT64_MAX = np.iinfo(np.int64).max
# Floats must parse back bit-exactly for CSV and Parquet copies to hash the same. pandas 3's default parser
# round-trips exactly (and deprecates the option); older pandas needs the round-trip parser asked for.
_CSV_FLOAT_OPTIONS: dict[str, Any] = (
    {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
)


class DatasetError(ValueError):
    """A data file, schema or registration problem; the message names the file, column or field at fault."""


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

    def to_local_data(self) -> LocalData:
        """The rows as tensors for training.

        ``x`` is float32 ``[rows, n]``: the numeric feature columns in schema order, each flattened per
        example (bools as 0/1). ``y`` is the target as int64 when its values are integers (integral floats
        included), float32 otherwise, or None when the dataset has no target.
        """
        parts: list[np.ndarray] = []
        for col in self.schema.features:
            values = self.columns[col.name]
            if col.dtype == "string":
                raise DatasetError(
                    f"{self.path.name}: feature column '{col.name}' is a string; encode it numerically"
                )
            flat = values.reshape(self.rows, -1).astype(np.float32)
            _reject_nan(flat, self.path, col.name, "feature")
            parts.append(flat)
        x = torch.from_numpy(np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32))
        target = self.schema.target
        if target is None:
            return LocalData(x=x, y=None)
        values = self.columns[target.name]
        if target.dtype == "string":
            raise DatasetError(
                f"{self.path.name}: target column '{target.name}' is a string; encode it numerically"
            )
        if target.dtype in ("int64", "bool"):
            y = torch.from_numpy(values.astype(np.int64))
        else:
            _reject_nan(values, self.path, target.name, "target")
            integral = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
            if integral and np.all(np.abs(values) <= 2**53):
                y = torch.from_numpy(values.astype(np.int64))
            else:
                y = torch.from_numpy(values.astype(np.float32))
        return LocalData(x=x, y=y)


def _reject_nan(values: np.ndarray, path: Path, name: str, role: str) -> None:
    if values.dtype.kind == "f":
        missing = np.isnan(values.reshape(values.shape[0], -1)).any(axis=1)
        if missing.any():
            row = int(np.argmax(missing)) + 1
            raise DatasetError(
                f"{path.name}: {role} column '{name}' has {int(missing.sum())} missing (NaN) value(s), "
                f"first in row {row}; fill or drop them before training"
            )


# -------------------------------------------------------------------------------------------- canonical hash


def schema_header(schema: DatasetSchema) -> bytes:
    """The canonical JSON header of a schema (sorted keys, no spaces, UTF-8)."""
    body = schema.model_dump(mode="json", exclude_none=True)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _schema_columns(schema: DatasetSchema) -> list[ColumnSchema]:
    return [*schema.features, *([schema.target] if schema.target is not None else [])]


def canonical_chunks(schema: DatasetSchema, columns: dict[str, np.ndarray]) -> Iterator[bytes]:
    """The canonical byte form of a dataset (see the module docstring), as a sequence of chunks."""
    yield schema_header(schema)
    for col in _schema_columns(schema):
        values = columns[col.name]
        if col.dtype == "string":
            yield b"".join(s.encode("utf-8") + b"\x00" for s in values.ravel())
        elif col.dtype == "bool":
            yield np.ascontiguousarray(values, dtype=np.uint8).tobytes()
        else:
            arr = np.array(values, dtype=_NUMPY_DTYPES[col.dtype], order="C", copy=True)
            if arr.dtype.kind == "f":
                arr[np.isnan(arr)] = np.nan
            yield arr.tobytes()


def canonical_sha256(schema: DatasetSchema, columns: dict[str, np.ndarray]) -> str:
    """SHA-256 (hex) of the canonical byte form of ``columns`` under ``schema``."""
    digest = hashlib.sha256()
    for chunk in canonical_chunks(schema, columns):
        digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- reading files


def load_table(
    path: str | os.PathLike[str], target: str | None, declared: DatasetSchema | None = None
) -> LoadedDataset:
    """Read a ``.csv``, ``.parquet`` or ``.npz`` file into a :class:`LoadedDataset`.

    ``target`` names the label column (None: unsupervised, every column is a feature). In an ``.npz`` file
    every array is a column: the first dimension is the row, the rest is the per-example shape.

    With ``declared``, the file must hold exactly the declared columns (any order) with compatible values
    (integers are accepted in float columns, nothing else is converted); the result uses the declared
    column order and dtypes. Without it the schema is inferred: int64, float64, bool or string (float32
    arrays in ``.npz`` stay float32). Raises :class:`DatasetError` naming the file and column at fault.
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
        order = [c.name for c in _schema_columns(declared)]
        wanted: dict[str, ColumnSchema | None] = {c.name: c for c in _schema_columns(declared)}
    else:
        order = [name for name in raw if name != target] + ([target] if target is not None else [])
        wanted = dict.fromkeys(order)
    columns: dict[str, np.ndarray] = {}
    specs: dict[str, ColumnSchema] = {}
    for name in order:
        dtype, values = _canonical_column(file, fmt, name, raw[name], wanted[name])
        shape = list(values.shape[1:]) or None
        columns[name] = values
        specs[name] = ColumnSchema(name=name, dtype=dtype, shape=shape)
    features = [specs[name] for name in order if name != target]
    if not features:
        raise DatasetError(f"{file.name}: no feature columns besides the target '{target}'")
    schema = DatasetSchema(features=features, target=specs[target] if target is not None else None)
    return LoadedDataset(
        schema=schema,
        rows=int(rows),
        sha256=canonical_sha256(schema, columns),
        format=fmt,
        path=file.resolve(),
        columns=columns,
    )


def _resolve_target(file: Path, target: str | None, declared: DatasetSchema | None) -> str | None:
    if declared is None:
        return target
    declared_target = declared.target.name if declared.target is not None else None
    if target is None:
        return declared_target
    if declared_target is None:
        raise DatasetError(
            f"{file.name}: target column '{target}' given but the declared schema has no target"
        )
    if declared_target != target:
        raise DatasetError(
            f"{file.name}: target column '{target}' given but the declared schema's target "
            f"is '{declared_target}'"
        )
    return target


def _check_declared_names(file: Path, raw: dict[str, Any], declared: DatasetSchema) -> None:
    names = [c.name for c in _schema_columns(declared)]
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
                {c.name: str for c in _schema_columns(declared) if c.dtype == "string"} if declared else None
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
                values = raw.to_numpy(dtype=_NUMPY_DTYPES[dtype], **fill)
    else:
        if dtype == "string":
            text = raw.astype(str) if raw.dtype.kind == "U" else np.char.decode(raw, "utf-8")
            values = np.empty(text.shape, dtype=object)
            values[...] = text.tolist() if text.ndim else text.item()
        else:
            if raw.dtype.kind == "u" and raw.size and int(raw.max()) > _INT64_MAX:
                raise DatasetError(f"{where} has values larger than the int64 maximum")
            values = np.ascontiguousarray(raw, dtype=_NUMPY_DTYPES[dtype])
    if dtype == "string" and any("\x00" in s for s in values.ravel()):
        raise DatasetError(f"{where} contains a NUL character, which strings may not hold")
    return values


# -------------------------------------------------------------------------------------------- cards, schemas


def build_card(
    loaded: LoadedDataset,
    name: str,
    license: str,
    description: str = "",
    visibility: Visibility | str = "members",
) -> DatasetCardIn:
    """The metadata-only card for a loaded dataset, validated; :class:`DatasetError` on a bad field."""
    try:
        return DatasetCardIn.model_validate(
            {
                "name": name,
                "description": description,
                "schema": loaded.schema.model_dump(mode="json"),
                "rows": loaded.rows,
                "sha256": loaded.sha256,
                "license": license,
                "visibility": visibility,
                "file_format": loaded.format,
            }
        )
    except ValidationError as exc:
        raise DatasetError(_card_error(exc, name, license, visibility)) from exc


def _card_error(exc: ValidationError, name: str, license: str, visibility: Any) -> str:
    messages = []
    for err in exc.errors():
        where = str(err["loc"][0]) if err["loc"] else "card"
        if where == "license":
            messages.append(
                f"license {license!r} is not a valid SPDX license identifier or expression "
                "(e.g. 'CC-BY-4.0', 'MIT', 'Apache-2.0 OR MIT'; see https://spdx.org/licenses/)"
            )
        elif where == "name":
            messages.append(
                f"dataset name {name!r} is not valid: use 1-63 lowercase letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        elif where == "visibility":
            messages.append(
                f"visibility {visibility!r} is not one of: {', '.join(v.value for v in Visibility)}"
            )
        else:
            messages.append(f"{where}: {err['msg']}")
    return "; ".join(messages)


_SCHEMA_ENTRY = re.compile(r"^(?P<name>[^:\[\]]+):(?P<dtype>[A-Za-z0-9]+)(?:\[(?P<shape>[0-9,\s]*)\])?$")


def parse_schema_option(text: str, target: str | None = None) -> DatasetSchema:
    """Parse a CLI ``--schema`` value such as ``"a:float64,b:int64,label:int64"``.

    Each entry is ``name:dtype`` with dtype one of int64, float64, float32, bool, string, optionally with a
    per-example shape for array columns: ``image:float32[8,8]``. The column named ``target`` (if any) becomes
    the schema's target; the others are the features, in the given order.
    """
    entries = _split_entries(text)
    if not entries:
        raise DatasetError("--schema is empty; expected entries like 'a:float64,b:int64,label:int64'")
    columns: list[ColumnSchema] = []
    for entry in entries:
        match = _SCHEMA_ENTRY.match(entry)
        if match is None:
            raise DatasetError(
                f"--schema entry {entry!r} is not 'name:dtype' (or 'name:dtype[d1,d2]' for array columns)"
            )
        name, dtype = match["name"].strip(), match["dtype"]
        if not name:
            raise DatasetError(f"--schema entry {entry!r} has an empty column name")
        if dtype not in DTYPES:
            raise DatasetError(
                f"--schema entry {entry!r}: unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}"
            )
        shape = None
        if match["shape"] is not None:
            dims = [d.strip() for d in match["shape"].split(",") if d.strip()]
            if not dims or any(int(d) < 1 for d in dims):
                raise DatasetError(f"--schema entry {entry!r}: a shape needs positive dimensions, like [8,8]")
            shape = [int(d) for d in dims]
        if any(c.name == name for c in columns):
            raise DatasetError(f"--schema lists column '{name}' twice")
        columns.append(ColumnSchema(name=name, dtype=dtype, shape=shape))
    features = [c for c in columns if c.name != target]
    target_col = next((c for c in columns if c.name == target), None)
    if target is not None and target_col is None:
        raise DatasetError(
            f"target column '{target}' is not in --schema; columns: {', '.join(c.name for c in columns)}"
        )
    if not features:
        raise DatasetError("--schema has no feature columns besides the target")
    return DatasetSchema(features=features, target=target_col)


def _split_entries(text: str) -> list[str]:
    """Split on commas outside brackets; drop empty entries from stray commas."""
    entries, depth, current = [], 0, []
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            entries.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    entries.append("".join(current).strip())
    return [e for e in entries if e]


# -------------------------------------------------------------------------------------------- local registry


@dataclass(frozen=True)
class RegisteredDataset:
    """One entry of the node's registry: where the file is, which column is the target, and its card."""

    name: str
    path: Path
    target: str | None
    card: DatasetCardIn


class LocalRegistry:
    """The node's record of its registered datasets, kept in ``<org_dir>/datasets.json``.

    Writes are atomic (temp file + ``os.replace``) and serialised between processes with a lock file, so a
    node agent reading the registry never sees a half-written file. Data loaded by :meth:`load_local` is
    cached in memory per (name, sha256); the cache entry is reused only while the file's size, mtime and
    inode are unchanged, otherwise the file is re-read and re-verified.
    """

    def __init__(self, org_dir: str | os.PathLike[str]) -> None:
        self.org_dir = Path(org_dir)
        self.path = self.org_dir / REGISTRY_FILE
        self._cache: dict[tuple[str, str], tuple[tuple[int, int, int], LocalData]] = {}
        self._lock = threading.Lock()

    def add(
        self, name: str, path: str | os.PathLike[str], target: str | None, card: DatasetCardIn
    ) -> RegisteredDataset:
        """Register (or re-register) a dataset file under ``name``; the path is stored absolute."""
        if card.name != name:
            raise DatasetError(f"card name '{card.name}' does not match the registered name '{name}'")
        file = Path(path).expanduser().resolve()
        if not file.is_file():
            raise DatasetError(f"{file}: no such file")
        card_target = card.schema_.target.name if card.schema_.target is not None else None
        if target != card_target:
            raise DatasetError(f"target {target!r} does not match the card's target column {card_target!r}")
        entry = RegisteredDataset(name=name, path=file, target=target, card=card)
        with self._exclusive():
            data = self._read()
            data["datasets"][name] = {
                "path": str(file),
                "target": target,
                "card": card.model_dump(mode="json", by_alias=True),
            }
            self._write(data)
        with self._lock:
            for key in [k for k in self._cache if k[0] == name]:
                del self._cache[key]
        return entry

    def get(self, name: str) -> RegisteredDataset:
        """The registered dataset called ``name``; :class:`DatasetError` when there is none."""
        raw = self._read()["datasets"].get(name)
        if raw is None:
            known = ", ".join(sorted(self._read()["datasets"])) or "none"
            raise DatasetError(f"no local dataset named '{name}' in {self.path}; registered: {known}")
        return self._entry(name, raw)

    def all(self) -> list[RegisteredDataset]:
        """Every registered dataset, sorted by name."""
        datasets = self._read()["datasets"]
        return [self._entry(name, datasets[name]) for name in sorted(datasets)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._read()["datasets"]

    def load_local(self, name: str) -> LocalData:
        """The tensors of a registered dataset, after checking that the file still has the card's SHA-256."""
        entry = self.get(name)
        try:
            stat = entry.path.stat()
        except FileNotFoundError as exc:
            raise DatasetError(f"dataset '{name}': its file {entry.path} no longer exists") from exc
        signature = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        key = (name, entry.card.sha256)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        loaded = load_table(entry.path, entry.target, declared=entry.card.schema_)
        if loaded.sha256 != entry.card.sha256:
            raise DatasetError(
                f"dataset '{name}': {entry.path} changed since it was registered "
                f"(sha256 now {loaded.sha256[:12]}..., card says {entry.card.sha256[:12]}...); "
                "register it again to publish a new card"
            )
        local = loaded.to_local_data()
        with self._lock:
            self._cache[key] = (signature, local)
        return local

    def _entry(self, name: str, raw: dict[str, Any]) -> RegisteredDataset:
        try:
            card = DatasetCardIn.model_validate(raw["card"])
            return RegisteredDataset(name=name, path=Path(raw["path"]), target=raw.get("target"), card=card)
        except (KeyError, TypeError, ValidationError) as exc:
            raise DatasetError(f"{self.path}: entry '{name}' is malformed: {exc}") from exc

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"version": 1, "datasets": {}}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{self.path}: not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
            raise DatasetError(f"{self.path}: expected an object with a 'datasets' object")
        return data

    def _write(self, data: dict[str, Any]) -> None:
        write_json_atomic(self.path, data)

    def _exclusive(self) -> contextlib.AbstractContextManager[None]:
        return exclusive_lock(self.path)


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (temp file in the same directory, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock (``<path>.lock``) between processes while ``path`` is read and rewritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    with open(path.parent / f"{path.name}.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------ control variates

CONTROLS_DIR = "controls"
_CONTROLS_FORMAT = "consortium.scaffold-client-control.v1"


@dataclass(frozen=True)
class ControlKey:
    """Whose control variate: one dataset's ``c_i`` in one run of one project (spec hash included, so that a
    reset hub that reuses project and run ids never hands a stale ``c_i`` to a different project)."""

    project_id: int
    spec_hash: str
    run_id: int
    dataset: str


class ControlStore:
    """The node's SCAFFOLD client control variates ``c_i``, one safetensors file per :class:`ControlKey` under
    ``<org_dir>/controls/``. They never leave the node: the hub only sees each round's ``delta_c``.

    A file holds the round it was written for and ``c_i`` both before and after that round, so a round that
    the hub replays after a restart starts from the same ``c_i`` as its first attempt. Writes are atomic.
    """

    def __init__(self, org_dir: str | os.PathLike[str]) -> None:
        self.root = Path(org_dir) / CONTROLS_DIR

    def path(self, key: ControlKey) -> Path:
        if not re.fullmatch(NAME_PATTERN, key.dataset) or not re.fullmatch(r"[0-9a-f]{16,}", key.spec_hash):
            raise FLError(f"bad control-variate key {key}: a dataset name and a hex spec hash are needed")
        project = f"project-{key.project_id}-{key.spec_hash[:16]}"
        return self.root / project / f"run-{key.run_id}" / f"{key.dataset}.safetensors"

    def load(self, key: ControlKey, round_number: int) -> dict[str, torch.Tensor] | None:
        """``c_i`` at the start of ``round_number``, or None when this node has none yet (it starts at 0)."""
        file = self.path(key)
        if not file.exists():
            return None
        try:
            with safe_open(str(file), framework="pt") as handle:
                meta = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            written = int(meta["round"])
        except Exception as exc:
            raise FLError(f"{file}: not a readable control-variate file: {exc}") from exc
        if meta.get("format") != _CONTROLS_FORMAT:
            raise FLError(f"{file}: unknown control-variate format {meta.get('format')!r}")
        if round_number < written:
            raise FLError(
                f"{file} holds c_i after round {written}, later than the task's round {round_number}"
            )
        part = "before/" if round_number == written else "after/"
        return {name[len(part) :]: t for name, t in tensors.items() if name.startswith(part)}

    def save(
        self,
        key: ControlKey,
        round_number: int,
        before: dict[str, torch.Tensor],
        after: dict[str, torch.Tensor],
    ) -> Path:
        """Record ``c_i`` before and after ``round_number`` (atomically replacing the previous record)."""
        file = self.path(key)
        file.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"before/{n}": t for n, t in before.items()} | {f"after/{n}": t for n, t in after.items()}
        payload = save_tensors(
            {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()},
            metadata={"format": _CONTROLS_FORMAT, "round": str(round_number)},
        )
        write_bytes_atomic(file, payload)
        return file
