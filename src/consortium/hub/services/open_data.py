"""Open data: an owner stages a dataset file in chunks, then publishes it as an immutable version (the file a
content-addressed blob checked against its declared SHA-256), or withdraws a version with a reason.

A staged upload is a file beside the blob store (``uploads/<dataset id>-<sha256>.part``), appended to only at
its current end (a resumed upload asks :func:`received` where to go on). The hub hashes each chunk as it
appends it (:class:`RunningHashes`), so publishing need not read the file again; after a restart, or when the
file changed behind its back, it hashes the file whole. A mismatch, a known version or an unknown licence
deletes it, so a failed publish leaves no blob and no row. Chunks are not fsynced one by one: an upload cut
by a crash resumes from what the file holds (and a damaged tail fails the hash at publish); the file is
fsynced once, before it becomes a blob.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.governance.licences import obligations
from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import Dataset
from consortium.hub.db.open_data_models import OpenDataDownload, OpenDataVersion
from consortium.hub.services import datasets, ledger, licensing, open_data_gate
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden, NotFound, ServiceError
from consortium.hub.services.identity import Principal
from consortium.open_data_wire import SHA256_PATTERN, Datasheet, OpenVersionIn, OpenVersionOut

HASH_CHUNK = 1 << 20
MAX_STAGED_BYTES = 1 << 40
"""The most bytes one staged upload may grow to (1 TiB)."""
LATEST = "latest"
_APPENDS = threading.Lock()
"""Serialises check-and-append of staged uploads (one hub process), so two racing chunks cannot both land."""


def _owned(session: Session, actor: Principal, ref: str) -> Dataset:
    """The dataset ``ref`` when the caller acts for its org (its key or a steward); 404 if it cannot see
    it."""
    dataset = datasets.by_ref(session, actor, ref)
    if not actor.acts_for(dataset.org_id):
        raise Forbidden(f"only {dataset.org.name}'s node or stewards publish its datasets")
    return dataset


def staged_path(blobs: BlobStore, dataset_id: int, sha256: str) -> Path:
    if not re.fullmatch(SHA256_PATTERN, sha256):
        raise BadRequest("sha256: 64 lowercase hex digits expected")
    return blobs.root / "uploads" / f"{dataset_id}-{sha256}.part"


def received(session: Session, actor: Principal, blobs: BlobStore, ref: str, sha256: str) -> int:
    """How many bytes of the upload ``sha256`` the hub holds for the caller's dataset ``ref``."""
    path = staged_path(blobs, _owned(session, actor, ref).id, sha256)
    return path.stat().st_size if path.exists() else 0


def _signature(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


class RunningHashes:
    """The SHA-256 of each staged upload so far, updated as chunks are appended, with the file's (size,
    mtime, inode) after the last append: a file that does not match (a hub restart, a change behind the
    hub's back) is hashed whole instead. Callers hold ``_APPENDS``."""

    def __init__(self) -> None:
        self._running: dict[Path, tuple[tuple[int, int, int], hashlib._Hash]] = {}

    def _current(self, path: Path) -> hashlib._Hash:
        state = self._running.get(path)
        if state is not None and path.exists() and state[0] == _signature(path):
            return state[1]
        digest = hashlib.sha256()
        if path.exists():
            with path.open("rb") as f:
                while chunk := f.read(HASH_CHUNK):
                    digest.update(chunk)
        return digest

    def append(self, path: Path, chunk: bytes) -> None:
        """Append ``chunk`` to ``path`` and to its running hash."""
        digest = self._current(path)
        with path.open("ab") as out:
            out.write(chunk)
        digest.update(chunk)
        self._running[path] = (_signature(path), digest)

    def hexdigest(self, path: Path) -> str:
        """The SHA-256 of the staged file as it is now."""
        return self._current(path).copy().hexdigest()

    def forget(self, path: Path) -> None:
        self._running.pop(path, None)


RUNNING = RunningHashes()


def append_chunk(session: Session, actor: Principal, blobs: BlobStore, ref: str, sha256: str, offset: int,
                 chunk: bytes) -> int:
    """Append ``chunk`` at ``offset`` (which must be the staged size: 409 names the size otherwise); the new
    size."""
    path = staged_path(blobs, _owned(session, actor, ref).id, sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _APPENDS:
        held = path.stat().st_size if path.exists() else 0
        if offset != held:
            raise Conflict(f"the hub holds {held} bytes of this upload; send from offset {held}", received=held)
        if held + len(chunk) > MAX_STAGED_BYTES:
            raise BadRequest(f"an upload may not exceed {MAX_STAGED_BYTES} bytes")
        RUNNING.append(path, chunk)
    return held + len(chunk)


def _discard(staged: Path) -> None:
    with _APPENDS:
        staged.unlink(missing_ok=True)
        RUNNING.forget(staged)


STALE_UPLOAD_S = 24 * 3600.0
"""A staged upload untouched this long is abandoned: the hub's housekeeping deletes it."""


def expire_uploads(blobs: BlobStore, now: float, max_age_s: float = STALE_UPLOAD_S) -> list[Path]:
    """Delete staged uploads not appended to for ``max_age_s`` (a publisher that never came back); the paths
    deleted."""
    gone = []
    with _APPENDS:
        for path in (blobs.root / "uploads").glob("*.part"):
            if now - path.stat().st_mtime > max_age_s:
                path.unlink(missing_ok=True)
                RUNNING.forget(path)
                gone.append(path)
    return gone


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks (constant memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class CorruptFile(ServiceError):
    """A stored file no longer has the SHA-256 it was published with: never served."""

    status_code = 500


class VerifiedBlobs:
    """Remembers which blob files hashed right, by (size, mtime, inode): a file changed since is hashed
    again before it is served."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, int, int]] = {}
        self._lock = threading.Lock()

    def check(self, path: Path, sha256: str) -> None:
        try:
            stat = path.stat()
        except FileNotFoundError as exc:
            raise CorruptFile(f"the file of {sha256[:12]}... is missing from the hub's store") from exc
        signature = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        with self._lock:
            if self._seen.get(sha256) == signature:
                return
        if file_sha256(path) != sha256:
            with self._lock:
                self._seen.pop(sha256, None)
            raise CorruptFile(f"the hub's copy of {sha256[:12]}... fails its SHA-256 check; it is not served "
                              "(the operator restores it from a backup or the owner publishes again)")
        with self._lock:
            self._seen[sha256] = signature

    def remember(self, path: Path, sha256: str) -> None:
        """``path`` was just hashed to ``sha256`` (a publish): serve it without hashing it again."""
        stat = path.stat()
        with self._lock:
            self._seen[sha256] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)


VERIFIED = VerifiedBlobs()


def _check_publishable(session: Session, dataset: Dataset, body: OpenVersionIn,
                       staged: Path) -> tuple[str, tuple[int, int, int]]:
    """The canonical licence and the staged file's signature when it hashed right; Conflict / BadRequest for a known version, an unknown licence, a table that is
    not the card's, or a staged file that is missing or fails its hash."""
    if session.scalar(select(OpenDataVersion.id).where(OpenDataVersion.dataset_id == dataset.id,
                                                       OpenDataVersion.version == body.version)):
        raise Conflict(f"{dataset.org.name}/{dataset.name}@{body.version} already exists; versions are "
                       "immutable")
    if body.version == LATEST:
        raise BadRequest(f"version: {LATEST!r} names the newest version in URLs; pick another name")
    licence = licensing.normalised("license", body.license)
    real = body.synthetic is None  # DP synthetic rows have their own table hash and count, not the card's
    if real and body.table_sha256 != dataset.sha256:
        raise BadRequest(f"table_sha256 {body.table_sha256[:12]}... is not the card's "
                         f"{dataset.sha256[:12]}...; register the changed file as a new card first")
    if real and body.rows != dataset.rows:
        raise BadRequest(f"rows: {body.rows}, the card says {dataset.rows}")
    if not staged.exists():
        raise BadRequest(f"nothing uploaded for sha256 {body.sha256}; upload the file first")
    with _APPENDS:
        found, signature = RUNNING.hexdigest(staged), _signature(staged)
    if found != body.sha256:
        raise BadRequest(f"the uploaded file hashes to {found}, not the declared {body.sha256} (truncated or "
                         "corrupted upload); nothing was published")
    return licence, signature


def _durable(staged: Path) -> None:
    """fsync the staged file once (its chunks were not), before it is renamed into the blob store."""
    with staged.open("rb") as f:
        os.fsync(f.fileno())


def publish(session: Session, actor: Principal, blobs: BlobStore, ref: str,
            body: OpenVersionIn) -> OpenDataVersion:
    """Publish the staged upload as an immutable version linked to the dataset's latest one; any refusal
    deletes the staged file (nothing half-published)."""
    dataset = _owned(session, actor, ref)
    staged = staged_path(blobs, dataset.id, body.sha256)
    try:
        licence, signature = _check_publishable(session, dataset, body, staged)
        synthetic = open_data_gate.check(session, dataset, body)
    except (BadRequest, Conflict):
        _discard(staged)
        raise
    predecessor = session.scalar(select(OpenDataVersion).where(OpenDataVersion.dataset_id == dataset.id)
                                 .order_by(OpenDataVersion.id.desc()).limit(1))
    size = staged.stat().st_size
    entry = ledger.record(session, "dataset.published", actor.label, {
        "dataset": ref, "version": body.version, "sha256": body.sha256, "table_sha256": body.table_sha256,
        "size": size, "rows": body.rows, "license": licence,
        "predecessor": predecessor.version if predecessor else None,
        "anonymity": body.anonymity.model_dump(mode="json") if body.anonymity else None,
        "synthetic": synthetic}, scope=ledger.source_scope(dataset.id))
    row = OpenDataVersion(dataset_id=dataset.id, version=body.version, sha256=body.sha256,
                          table_sha256=body.table_sha256, size=size, rows=body.rows, license=licence,
                          datasheet=body.datasheet.model_dump(),
                          predecessor_id=predecessor.id if predecessor else None, published_seq=entry.seq,
                          anonymity=body.anonymity.model_dump(mode="json") if body.anonymity else None,
                          synthetic=body.synthetic.model_dump(mode="json") if body.synthetic else None)
    session.add(row)
    session.flush()
    target = blobs.path(body.sha256)
    existed = target.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _APPENDS:
        if _signature(staged) != signature:
            raise Conflict("the upload changed while it was being published; publish again")
        if existed:
            staged.unlink()
        else:
            _durable(staged)
            os.replace(staged, target)
            VERIFIED.remember(target, body.sha256)
        RUNNING.forget(staged)
    try:
        session.commit()
    except BaseException:
        if not existed:
            target.unlink(missing_ok=True)
        raise
    return row


def version_of(session: Session, actor: Principal | None, ref: str, version: str | None) -> OpenDataVersion:
    """The version ``version`` of dataset ``ref`` (None: the latest not withdrawn); 404 when the caller may
    not see the dataset or there is no such version."""
    dataset = datasets.by_ref(session, actor, ref)
    query = select(OpenDataVersion).where(OpenDataVersion.dataset_id == dataset.id)
    if version is None:
        query = (query.where(OpenDataVersion.withdrawn_at.is_(None))
                 .order_by(OpenDataVersion.id.desc()).limit(1))
    else:
        query = query.where(OpenDataVersion.version == version)
    row = session.scalar(query)
    if row is None:
        raise NotFound(f"no published version {version or '(any)'} of {ref}")
    return row


def versions(session: Session, actor: Principal | None, ref: str) -> list[OpenDataVersion]:
    """Every published version of ``ref`` (withdrawn ones too, with their reason), oldest first."""
    dataset = datasets.by_ref(session, actor, ref)
    return list(session.scalars(select(OpenDataVersion).where(OpenDataVersion.dataset_id == dataset.id)
                                .order_by(OpenDataVersion.id)))


def withdraw(session: Session, actor: Principal, ref: str, version: str, reason: str,
             now: datetime) -> OpenDataVersion:
    """Stop downloads of a version; it stays listed (and in the ledger) with the reason."""
    dataset = _owned(session, actor, ref)
    row = version_of(session, actor, ref, version)
    if row.withdrawn_at is not None:
        raise Conflict(f"{ref}@{version} was withdrawn already: {row.withdrawn_reason}")
    row.withdrawn_at = now
    row.withdrawn_reason = reason
    ledger.record(session, "dataset.withdrawn", actor.label, {"dataset": ref, "version": version,
                                                               "reason": reason},
                  scope=ledger.source_scope(dataset.id))
    session.commit()
    return row


def to_out(session: Session, row: OpenDataVersion, download_url: str) -> OpenVersionOut:
    dataset = session.get(Dataset, row.dataset_id)
    predecessor = session.get(OpenDataVersion, row.predecessor_id) if row.predecessor_id else None
    count = session.scalar(select(func.coalesce(func.sum(OpenDataDownload.count), 0))
                           .where(OpenDataDownload.version_id == row.id))
    return OpenVersionOut(
        id=row.id, dataset=f"{dataset.org.name}/{dataset.name}", version=row.version, sha256=row.sha256,
        table_sha256=row.table_sha256, size=row.size, rows=row.rows, license=row.license,
        obligations=obligations(row.license, f"{dataset.org.name}/{dataset.name}").describe(),
        datasheet=Datasheet.model_validate(row.datasheet),
        predecessor=predecessor.version if predecessor else None,
        published_at=row.published_at, published_seq=row.published_seq, withdrawn_reason=row.withdrawn_reason,
        withdrawn_at=row.withdrawn_at, downloads=int(count or 0), download_url=download_url,
        anonymity=row.anonymity, synthetic=row.synthetic)
