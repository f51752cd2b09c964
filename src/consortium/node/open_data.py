"""The node's side of open data: write a registered table as canonical CSV, upload it to the hub in chunks
(resuming where the hub's copy ends), publish it as a version; download a version (resuming with HTTP range
requests) and check its SHA-256 on arrival.

The canonical CSV of a table: a header of the column names in schema order (features, then the target), then
one line per row; integers in decimal, floats as Python's shortest round-trip ``repr`` (a missing value
empty), booleans ``True`` / ``False``, strings quoted where CSV needs it. The node checks that the table still
has its card's hash before it writes a byte, so what leaves is what the card describes.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from consortium.client import HubClient, HubError
from consortium.node.anonymise import DEFAULT_K, DEFAULT_L, require
from consortium.node.registry import LocalRegistry
from consortium.open_data_wire import Datasheet, OpenVersionIn
from consortium.table_hash import schema_columns
from consortium.tables import DatasetError, LoadedDataset, load_table

UPLOAD_CHUNK = 8 << 20
"""Bytes per upload request (well under the hub's default upload limit of 64 MiB)."""
READ_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that did not arrive whole and right (the partial file is removed, never kept as good)."""


def _cell(value: Any, dtype: str) -> str:
    if dtype in ("float64", "float32"):
        number = float(value)
        return "" if math.isnan(number) else repr(number)
    if dtype == "bool":
        return "True" if bool(value) else "False"
    if dtype == "int64":
        return str(int(value))
    return str(value)


def canonical_csv_rows(loaded: LoadedDataset) -> Iterator[list[str]]:
    """The header, then each row, as CSV fields (see the module docstring); shaped columns are refused."""
    columns = schema_columns(loaded.schema)
    for col in columns:
        if tuple(col.shape or ()) != ():
            raise DatasetError(f"column {col.name!r} holds arrays of shape {col.shape}; only flat tables are "
                               "published as CSV")
    yield [col.name for col in columns]
    arrays: list[np.ndarray] = [loaded.columns[col.name] for col in columns]
    for i in range(loaded.rows):
        yield [_cell(array[i], col.dtype) for array, col in zip(arrays, columns, strict=True)]


def write_canonical_csv(loaded: LoadedDataset, out: Path) -> str:
    """Write the canonical CSV to ``out`` (atomically); its SHA-256."""
    partial = out.with_name(out.name + ".tmp")
    try:
        with partial.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            for row in canonical_csv_rows(loaded):
                writer.writerow(row)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    return file_sha256(out)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def export_registered(org_dir: Path, name: str, out_dir: Path) -> tuple[LoadedDataset, Path, str]:
    """Load the registered dataset ``name``, check it still has its card's hash, write its canonical CSV
    under ``out_dir``; (table, file, file SHA-256). DatasetError for a changed file."""
    entry = LocalRegistry(org_dir).get(name)
    loaded = load_table(entry.path, entry.target, declared=entry.card.schema_)
    if loaded.sha256 != entry.card.sha256:
        raise DatasetError(f"dataset {name!r}: {entry.path} no longer matches its card (sha256 "
                           f"{loaded.sha256[:12]}..., card {entry.card.sha256[:12]}...); register it again")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{name}.csv"
    return loaded, out, write_canonical_csv(loaded, out)


def upload_file(client: HubClient, ref: str, path: Path, sha256: str, chunk_size: int = UPLOAD_CHUNK) -> int:
    """Send ``path`` to the hub in chunks from where the hub's copy ends; the bytes the hub holds."""
    base = f"/api/datasets/{ref}/uploads/{sha256}"
    held = client.get_json(base)["received"]
    size = path.stat().st_size
    if held > size:
        raise DatasetError(f"the hub holds {held} bytes of a {size}-byte file; its upload cannot be resumed")
    with path.open("rb") as f:
        f.seek(held)
        while held < size:
            chunk = f.read(chunk_size)
            held = client.request("PUT", base, params={"offset": held}, content=chunk,
                                  headers={"Content-Type": "application/octet-stream"},
                                  timeout=300.0).json()["received"]
    return held


@dataclass(frozen=True)
class AnonymityGate:
    """What the owner declared about a table on people, and the k and l it must meet before it leaves."""

    quasi: list[str]
    sensitive: list[str]
    identifiers: list[str]
    k: int = DEFAULT_K
    l_required: int = DEFAULT_L


def publish(client: HubClient, org_dir: Path, ref: str, version: str, licence: str, datasheet: Datasheet,
            work_dir: Path, gate: AnonymityGate | None = None) -> dict:
    """Export, upload and publish the org's registered dataset ``ref`` (``org/name``) as ``version``; the
    hub's version record. With ``gate``, a table below its k or l (or holding a direct identifier) is
    refused (AnonymityError) before a byte is sent."""
    name = ref.partition("/")[2]
    loaded, path, sha256 = export_registered(org_dir, name, work_dir)
    try:
        if gate is not None:
            frame = pd.DataFrame({c: list(v) for c, v in loaded.columns.items()})
            require(frame, gate.quasi, gate.sensitive, gate.k, gate.l_required, gate.identifiers)
        upload_file(client, ref, path, sha256)
        body = OpenVersionIn(version=version, sha256=sha256, table_sha256=loaded.sha256, rows=loaded.rows,
                             license=licence, datasheet=datasheet)
        return client.post_json(f"/api/datasets/{ref}/versions", body.model_dump(mode="json"))
    finally:
        path.unlink(missing_ok=True)


def _fetch(client: HubClient, path: str, params: dict, partial: Path, held: int) -> str:
    """Stream ``path`` into ``partial`` from byte ``held`` (a range request; from 0 when the hub finds the
    range past the end); the SHA-256 the hub names for the whole file."""
    headers = {"Range": f"bytes={held}-"} if held else {}
    with client.http.stream("GET", path, params=params, headers=headers, timeout=300.0) as response:
        if response.status_code == 416 and held:
            response.read()
            partial.unlink()
            return _fetch(client, path, params, partial, 0)
        if response.status_code >= 400:
            response.read()
            detail = response.json().get("detail", response.text)
            raise HubError(response.status_code, detail, "GET", path)
        mode = "ab" if response.status_code == 206 else "wb"
        with partial.open(mode) as f:
            for chunk in response.iter_bytes(READ_CHUNK):
                f.write(chunk)
        return response.headers["x-content-sha256"]


def download(client: HubClient, ref: str, version: str, out: Path, accept_licence: str | None = None,
             file_format: str = "csv") -> dict:
    """Download ``ref@version`` to ``out`` as ``file_format`` (csv, or parquet made by the hub from the
    CSV), resuming a partial ``out.part`` with a range request; the file is kept only when its SHA-256 is
    the version's (the record's for CSV, the hub's ``X-Content-SHA256`` for Parquet); DownloadError
    otherwise, the partial file removed. The version record, with the file's ``sha256`` and ``size``."""
    record = client.get_json(f"/api/datasets/{ref}/versions/{version}")
    partial = out.with_name(out.name + ".part")
    held = partial.stat().st_size if partial.exists() else 0
    params = {"accept_license": accept_licence} if accept_licence else {}
    path = f"/api/datasets/{ref}/versions/{record['version']}/file"
    if file_format == "csv":
        if held > record["size"]:
            partial.unlink()
            held = 0
        if held < record["size"]:
            _fetch(client, path, params, partial, held)
        expected = record["sha256"]
    else:
        expected = _fetch(client, path, params | {"format": file_format}, partial, held)
    found = file_sha256(partial)
    if found != expected:
        partial.unlink()
        raise DownloadError(f"{ref}@{record['version']}: the file arrived with sha256 {found}, not the "
                            f"published {expected}; it was not kept")
    os.replace(partial, out)
    return record | {"sha256": expected, "size": out.stat().st_size, "format": file_format}
