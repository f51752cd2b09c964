"""Open data: stage a dataset file in chunks, publish it as a version, withdraw it, list versions, accept a
licence, and download a version (HTTP range requests, so an interrupted download resumes)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from consortium.hub.db.open_data_models import OpenDataVersion
from consortium.hub.deps import db, hub_state, optional_principal, principal
from consortium.hub.gate import optional, upload
from consortium.hub.services import open_data as service
from consortium.hub.services import open_data_downloads as downloads
from consortium.hub.services.open_data_parquet import PARQUET_MEDIA_TYPE, parquet_blob
from consortium.hub.services.errors import ServiceError
from consortium.hub.services.identity import Principal
from consortium.hub.state import HubState
from consortium.hub.wire import Name, StrictJSONRoute
from consortium.open_data_wire import (
    CSV_MEDIA_TYPE,
    SHA256_PATTERN,
    VERSION_PATTERN,
    LicenceAcceptIn,
    LicenceAcceptOut,
    OpenVersionIn,
    OpenVersionOut,
    UploadStatus,
    WithdrawIn,
)

router = APIRouter(prefix="/api", tags=["open data"], route_class=StrictJSONRoute)
Sha256Path = Annotated[str, Path(pattern=SHA256_PATTERN, description="SHA-256 of the whole file")]
VersionPath = Annotated[str, Path(pattern=VERSION_PATTERN)]
STREAM_CHUNK = 1 << 20
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class RangeNotSatisfiable(ServiceError):
    status_code = 416


def _url(request: Request, dataset: str, version: str) -> str:
    return str(request.base_url).rstrip("/") + f"/api/datasets/{dataset}/versions/{version}/file"


def _out(session: Session, request: Request, row: OpenDataVersion) -> OpenVersionOut:
    out = service.to_out(session, row, "")
    return out.model_copy(update={"download_url": _url(request, out.dataset, out.version)})


@router.get("/datasets/{org}/{name}/uploads/{sha256}", response_model=UploadStatus)
def upload_status(org: Name, name: Name, sha256: Sha256Path, session: Session = Depends(db),
                  state: HubState = Depends(hub_state), caller: Principal = Depends(principal)):
    """How many bytes of the file the hub holds (a resumed upload goes on from there)."""
    held = service.received(session, caller, state.blobs, f"{org}/{name}", sha256)
    return UploadStatus(sha256=sha256, received=held)


@router.put("/datasets/{org}/{name}/uploads/{sha256}", response_model=UploadStatus)
@upload
async def upload_chunk(org: Name, name: Name, sha256: Sha256Path, request: Request,
                       offset: Annotated[int, Query(ge=0, le=2**62)],
                       state: HubState = Depends(hub_state), caller: Principal = Depends(principal)):
    """Append the body (raw bytes of the file) at ``offset``, which must be the bytes the hub holds (409)."""
    chunk = await request.body()

    def store() -> int:
        with state.sessions() as session:
            return service.append_chunk(session, caller, state.blobs, f"{org}/{name}", sha256, offset, chunk)

    return UploadStatus(sha256=sha256, received=await run_in_threadpool(store))


@router.post("/datasets/{org}/{name}/versions", response_model=OpenVersionOut, status_code=201)
def publish_version(org: Name, name: Name, body: OpenVersionIn, request: Request,
                    session: Session = Depends(db), state: HubState = Depends(hub_state),
                    caller: Principal = Depends(principal)):
    """Publish the uploaded file as an immutable version (hash-checked; refusals delete the upload)."""
    return _out(session, request, service.publish(session, caller, state.blobs, f"{org}/{name}", body))


@router.get("/datasets/{org}/{name}/versions", response_model=list[OpenVersionOut])
@optional
def list_versions(org: Name, name: Name, request: Request, session: Session = Depends(db),
                  caller: Principal | None = Depends(optional_principal)):
    return [_out(session, request, row) for row in service.versions(session, caller, f"{org}/{name}")]


@router.get("/datasets/{org}/{name}/versions/{version}", response_model=OpenVersionOut)
@optional
def get_version(org: Name, name: Name, version: VersionPath, request: Request, session: Session = Depends(db),
                caller: Principal | None = Depends(optional_principal)):
    """A version by name (``latest``: the newest not withdrawn)."""
    ref = f"{org}/{name}"
    row = service.version_of(session, caller, ref, None if version == "latest" else version)
    return _out(session, request, row)


@router.post("/datasets/{org}/{name}/versions/{version}/withdraw", response_model=OpenVersionOut)
def withdraw_version(org: Name, name: Name, version: VersionPath, body: WithdrawIn, request: Request,
                     session: Session = Depends(db), state: HubState = Depends(hub_state),
                     caller: Principal = Depends(principal)):
    row = service.withdraw(session, caller, f"{org}/{name}", version, body.reason, state.clock())
    return _out(session, request, row)


@router.post("/licences/accept", response_model=LicenceAcceptOut)
def accept_licence(body: LicenceAcceptIn, session: Session = Depends(db),
                   caller: Principal = Depends(principal)):
    """The caller's org accepts a licence's obligations, once (a ``licence.accepted`` ledger entry)."""
    row = downloads.accept_licence(session, caller, body.license)
    terms = downloads.obligations(row.license, "the licensed data").describe()
    return LicenceAcceptOut(org=caller.org_name or "", license=row.license, obligations=terms,
                            ledger_seq=row.ledger_seq)


def _span(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) byte of a ``Range: bytes=a-[b]`` header; None without one; 416 when unsatisfiable."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        raise RangeNotSatisfiable(f"Range {header!r}: only one 'bytes=first-[last]' range is served")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) else size - 1
    if first >= size or last < first:
        raise RangeNotSatisfiable(f"Range {header!r} lies outside the file's {size} bytes", size=size)
    return first, min(last, size - 1)


def _stream(path: Path, first: int, last: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(first)
        left = last - first + 1
        while left > 0:
            chunk = f.read(min(STREAM_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


FILE_CONTENT = {CSV_MEDIA_TYPE: {}, PARQUET_MEDIA_TYPE: {}}


@router.get("/datasets/{org}/{name}/versions/{version}/file", response_class=StreamingResponse, responses={
    200: {"content": FILE_CONTENT, "description": "the file"},
    206: {"content": FILE_CONTENT, "description": "the requested byte range"}})
@optional
def download_file(org: Name, name: Name, version: VersionPath, request: Request,
                  accept_license: Annotated[str | None, Query(max_length=1000)] = None,
                  format: Literal["csv", "parquet"] = "csv",
                  session: Session = Depends(db), state: HubState = Depends(hub_state),
                  caller: Principal | None = Depends(optional_principal)):
    """The version's file (its SHA-256 in ``X-Content-SHA256`` and the ETag); ``Range`` for a part. A file
    whose stored bytes fail their hash is never served. A download starting at byte 0 is counted.
    ``format=parquet``: the same rows as Parquet (made from the CSV on the first request, then kept; its own
    SHA-256)."""
    ref = f"{org}/{name}"
    row = downloads.authorise(session, caller, ref, None if version == "latest" else version, accept_license)
    if format == "parquet":
        path, digest, media = parquet_blob(session, state.blobs, row), row.parquet_sha256, PARQUET_MEDIA_TYPE
    else:
        path, digest, media = downloads.blob_file(state.blobs, row), row.sha256, CSV_MEDIA_TYPE
    size = path.stat().st_size
    span = _span(request.headers.get("range"), size)
    first, last = span if span is not None else (0, size - 1)
    if first == 0:
        downloads.count_download(session, caller, row)
    headers = {"X-Content-SHA256": digest, "ETag": f'"{digest}"', "Accept-Ranges": "bytes",
               "Content-Length": str(last - first + 1),
               "Content-Disposition": f'attachment; filename="{name}-{row.version}.{format}"'}
    if span is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return StreamingResponse(_stream(path, first, last), status_code=206 if span is not None else 200,
                             media_type=media, headers=headers)
