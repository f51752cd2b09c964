"""The node's side of open data: write a registered table as canonical CSV, upload it to the hub in chunks
(resuming where the hub's copy ends), publish it as a version; download a version (resuming with HTTP range
requests) and check its SHA-256 on arrival.

The canonical CSV of a table: a header of the column names in schema order (features, then the target), then
one line per row; integers in decimal, floats as Python's shortest round-trip ``repr`` (a missing value
empty), booleans ``True`` / ``False``, strings quoted where CSV needs it (``node/canonical_csv.py`` writes it).
The node reads the registered file in batches (``node/table_stream.py``), writing the CSV and checking the
table's canonical hash against the card in the same pass, and sends nothing unless it matches: what leaves is
what the card describes.
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd

from consortium.client import HubClient, HubError
from consortium.governance.open_data_rules import OpenDataRules
from consortium.node.actions import prepare_dataset, register_dataset
from consortium.node.anonymise import AnonymityError, require
from consortium.node.canonical_csv import format_rows, header_line
from consortium.node.registry import LocalRegistry
from consortium.node.table_stream import Export, export_csv
from consortium.open_data_wire import AnonymityReport, Datasheet, OpenVersionIn, SyntheticRelease
from consortium.table_hash import schema_columns
from consortium.tables import DatasetError, LoadedDataset

UPLOAD_CHUNK = 8 << 20
"""Bytes per upload request (well under the hub's default upload limit of 64 MiB)."""
READ_CHUNK = 1 << 20
ROWS_PER_WRITE = 65_536


class DownloadError(RuntimeError):
    """A download that did not arrive whole and right (the partial file is removed, never kept as good)."""


def write_canonical_csv(loaded: LoadedDataset, out: Path) -> str:
    """Write a table already in memory as canonical CSV to ``out`` (atomically); its SHA-256."""
    columns = schema_columns(loaded.schema)
    for col in columns:
        if tuple(col.shape or ()) != ():
            raise DatasetError(f"column {col.name!r} holds arrays of shape {col.shape}; only flat tables are "
                               "published as CSV")
    partial = out.with_name(out.name + ".tmp")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as f:
            for start in range(0, loaded.rows, ROWS_PER_WRITE):
                batch = {name: values[start:start + ROWS_PER_WRITE] for name, values in loaded.columns.items()}
                data = format_rows(columns, batch) if start else header_line(columns) + format_rows(columns, batch)
                f.write(data)
                digest.update(data)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    return digest.hexdigest()


def _hash_into(digest: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK):
            digest.update(chunk)


def export_registered(org_dir: Path, name: str, out_dir: Path, keep: Sequence[str] = (),
                      reencode: bool = False) -> Export:
    """Read the registered dataset ``name`` in batches, writing its canonical CSV under ``out_dir`` and
    checking in the same pass that the file still has its card's hash (DatasetError otherwise, the CSV
    removed); ``keep``: columns to return whole (the anonymity gate's). A registered file found canonical
    at registration and unchanged since is not read: it is the export (the hub checks its SHA-256), unless
    ``reencode``."""
    entry = LocalRegistry(org_dir).get(name)
    if entry.canonical is not None and not keep and not reencode and entry.canonical.unchanged(entry.path):
        return Export(rows=entry.card.rows, table_sha256=entry.card.sha256, path=entry.path,
                      sha256=entry.canonical.sha256, size=entry.canonical.size, kept={}, written=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = export_csv(entry.path, entry.card.schema_, entry.card.rows, out_dir / f"{name}.csv", keep)
    if done.table_sha256 != entry.card.sha256 or done.rows != entry.card.rows:
        done.path.unlink(missing_ok=True)
        raise DatasetError(f"dataset {name!r}: {entry.path} no longer matches its card (sha256 "
                           f"{done.table_sha256[:12]}..., card {entry.card.sha256[:12]}...); register it again")
    return done


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
            # httpx's request and response objects form reference cycles that hold the chunk until the cyclic
            # collector runs, which few allocations trigger: without this the node's memory grew by a chunk per
            # request (8 MiB each, ~100 MB before a collection). Generation 0 costs tens of microseconds.
            del chunk
            gc.collect(0)
    return held


@dataclass(frozen=True)
class AnonymityGate:
    """What the owner declared about a table on people, and the k, l and t it asks for itself (None: the
    consortium policy's; a looser value than the policy's is ignored)."""

    quasi: list[str]
    sensitive: list[str]
    identifiers: list[str]
    k: int | None = None
    l_required: int | None = None
    t_allowed: float | None = None
    about_people: bool = True


def policy_rules(client: HubClient) -> OpenDataRules:
    """The open data rules of the consortium policy in force, read from the hub."""
    policy = client.get_json("/api/policy")["policy"]
    return OpenDataRules.model_validate(policy.get("open_data") or {})


def check_gate(frame: pd.DataFrame, gate: AnonymityGate | None, rules: OpenDataRules) -> AnonymityReport:
    """The anonymisation report of ``frame`` under the policy's ``rules`` tightened by the owner's ``gate``;
    AnonymityError (measured k, l, t and the columns at fault) for a table that falls short, still holds a
    declared identifier, or is about people without declared quasi-identifiers."""
    if gate is None or not gate.about_people:
        return AnonymityReport(about_people=False)
    if not gate.quasi:
        if rules.people_need_quasi:
            raise AnonymityError("the table is about people: declare its quasi-identifiers (--quasi); the "
                                 "consortium policy requires them")
        return AnonymityReport(about_people=True, identifiers=gate.identifiers)
    need = rules.tightened(gate.k, gate.l_required, gate.t_allowed)
    found = require(frame, gate.quasi, gate.sensitive, need.min_k, need.min_l, gate.identifiers, need.max_t)
    return AnonymityReport(about_people=True, identifiers=gate.identifiers, quasi=gate.quasi,
                           sensitive=gate.sensitive, k=found.k, l_diversity=found.l_diversity,
                           t_closeness=found.t_closeness, at_fault=found.at_fault)


def send_version(client: HubClient, ref: str, path: Path, body: OpenVersionIn) -> dict:
    """Upload ``path`` (resuming) and publish it as ``body`` describes; the hub's version record."""
    upload_file(client, ref, path, body.sha256)
    return client.post_json(f"/api/datasets/{ref}/versions", body.model_dump(mode="json", exclude_none=True))


def frame_of(loaded: LoadedDataset) -> pd.DataFrame:
    """A loaded table as a data frame (its columns in schema order)."""
    return pd.DataFrame({c.name: list(loaded.columns[c.name]) for c in schema_columns(loaded.schema)})


def publish(client: HubClient, org_dir: Path, ref: str, version: str, licence: str, datasheet: Datasheet,
            work_dir: Path, gate: AnonymityGate | None = None) -> dict:
    """Export, upload and publish the org's registered dataset ``ref`` (``org/name``) as ``version``; the
    hub's version record. The consortium policy's open data rules (read from the hub, tightened by
    ``gate``) are checked first: a table below them (or holding a direct identifier) is refused
    (AnonymityError) before a byte is sent, and the measured report travels with the publish. Without
    ``gate`` the owner declares the table is not about people."""
    name = ref.partition("/")[2]
    keep = [] if gate is None else list(dict.fromkeys([*gate.quasi, *gate.sensitive, *gate.identifiers]))
    schema = LocalRegistry(org_dir).get(name).card.schema_
    done = export_registered(org_dir, name, work_dir, [c.name for c in schema_columns(schema) if c.name in keep])
    try:
        report = check_gate(pd.DataFrame(done.kept), gate, policy_rules(client))
        return send_version(client, ref, done.path, OpenVersionIn(
            version=version, sha256=done.sha256, table_sha256=done.table_sha256, rows=done.rows,
            license=licence, datasheet=datasheet, anonymity=report))
    finally:
        done.discard()


def publish_file(client: HubClient, org_dir: Path, ref: str, file: Path, version: str, licence: str,
                 datasheet: Datasheet, work_dir: Path, gate: AnonymityGate | None = None, *,
                 target: str | None = None, description: str = "", visibility: str = "members",
                 categorical: list[str] | None = None, allow_missing: bool = False) -> dict:
    """Register a new file as the org's dataset ``ref`` and publish it as ``version`` in one go. Every check
    runs before anything is sent (those of ``dataset add``, the policy's anonymity gate, flat columns, the
    version name, a name not registered yet) and the canonical CSV is written from the table read for them;
    then the card is registered, the file uploaded and published. A refusal leaves nothing behind; a hub
    failure after the card was accepted leaves a registered dataset that ``publish`` without a file finishes
    (the upload resumes)."""
    org, _, name = ref.partition("/")
    identity = client.identity
    if identity is None or identity.org != org:
        raise DatasetError(f"{ref}: a new file is published as a dataset of this node's org "
                           f"({identity.org if identity else 'none'})")
    if name in {entry.name for entry in LocalRegistry(org_dir).all()}:
        raise DatasetError(f"{ref} is registered already; publish it without --file (or pick a new name)")
    loaded, card = prepare_dataset(file, name, licence, target, description, visibility,
                                   categorical=categorical, allow_missing=allow_missing)
    keep = [] if gate is None else [c for c in dict.fromkeys([*gate.quasi, *gate.sensitive, *gate.identifiers])
                                    if c in loaded.columns]
    report = check_gate(pd.DataFrame({c: loaded.columns[c].tolist() for c in keep}), gate, policy_rules(client))
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / f"{name}.csv"
    sha256 = write_canonical_csv(loaded, path)
    try:
        body = OpenVersionIn(version=version, sha256=sha256, table_sha256=loaded.sha256, rows=loaded.rows,
                             license=card.license, datasheet=datasheet, anonymity=report)
        register_dataset(client, org_dir, loaded, card)
        try:
            return send_version(client, ref, path, body)
        except (HubError, httpx.HTTPError, OSError) as exc:
            raise DatasetError(f"{ref} is registered but its publication failed ({exc}); run 'consortium "
                               f"dataset publish {ref} --version {version}' to finish it") from exc
    finally:
        path.unlink(missing_ok=True)


def publish_made_table(client: HubClient, ref: str, path: Path, loaded: LoadedDataset, version: str,
                       licence: str, datasheet: Datasheet, synthetic: SyntheticRelease) -> dict:
    """Publish a table made from dataset ``ref`` (DP synthetic data) as ``version``."""
    sha256 = write_canonical_csv(loaded, path)
    body = OpenVersionIn(version=version, sha256=sha256, table_sha256=loaded.sha256, rows=loaded.rows,
                         license=licence, datasheet=datasheet, synthetic=synthetic)
    return send_version(client, ref, path, body)


def _fetch(client: HubClient, path: str, params: dict, partial: Path, held: int,
           digest: hashlib._Hash) -> str:
    """Stream ``path`` into ``partial`` from byte ``held`` (a range request; from 0 when the hub finds the
    range past the end), hashing the whole file into ``digest`` as the bytes arrive (a resumed part is hashed
    first); the SHA-256 the hub names for the whole file."""
    headers = {"Range": f"bytes={held}-"} if held else {}
    with client.http.stream("GET", path, params=params, headers=headers, timeout=300.0) as response:
        if response.status_code == 416 and held:
            response.read()
            partial.unlink()
            return _fetch(client, path, params, partial, 0, digest)
        if response.status_code >= 400:
            response.read()
            detail = response.json().get("detail", response.text)
            raise HubError(response.status_code, detail, "GET", path)
        resumed = response.status_code == 206
        if resumed:
            _hash_into(digest, partial)
        with partial.open("ab" if resumed else "wb") as f:
            for chunk in response.iter_bytes(READ_CHUNK):
                f.write(chunk)
                digest.update(chunk)
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
    digest = hashlib.sha256()
    if file_format == "csv":
        if held > record["size"]:
            partial.unlink()
            held = 0
        if held < record["size"]:
            _fetch(client, path, params, partial, held, digest)
        else:
            _hash_into(digest, partial)
        expected = record["sha256"]
    else:
        expected = _fetch(client, path, params | {"format": file_format}, partial, held, digest)
    found = digest.hexdigest()
    if found != expected:
        partial.unlink()
        raise DownloadError(f"{ref}@{record['version']}: the file arrived with sha256 {found}, not the "
                            f"published {expected}; it was not kept")
    os.replace(partial, out)
    return record | {"sha256": expected, "size": out.stat().st_size, "format": file_format}
