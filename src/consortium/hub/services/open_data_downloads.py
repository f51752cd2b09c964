"""Open data downloads: who may download a version, licence acceptance, counting and the owner's credits,
and the check that a stored file still has its hash before a byte of it is served."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.governance.credits import CreditReason
from consortium.governance.licences import obligations
from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import Dataset, Org
from consortium.hub.db.open_data_models import LicenceAcceptance, OpenDataDownload, OpenDataVersion
from consortium.hub.services import credits, ledger, licensing
from consortium.hub.services.access import can_download_source, reader
from consortium.hub.services.errors import Forbidden, Gone, NotFound
from consortium.hub.services.identity import Principal
from consortium.hub.services.open_data import VERIFIED, CorruptFile, version_of

ANONYMOUS = 0
"""The ``org_id`` under which downloads without credentials are counted."""




def accept_licence(session: Session, actor: Principal, licence: str) -> LicenceAcceptance:
    """The caller's org accepts a licence's obligations (once: a second call answers the first acceptance)."""
    if actor.org_id is None:
        raise Forbidden("licences are accepted for an organisation; this caller has none")
    canonical = licensing.normalised("license", licence)
    found = session.scalar(select(LicenceAcceptance).where(LicenceAcceptance.org_id == actor.org_id,
                                                           LicenceAcceptance.license == canonical))
    if found is not None:
        return found
    terms = obligations(canonical, "the licensed data").describe()
    entry = ledger.record(session, "licence.accepted", actor.label,
                          {"org": actor.org_name, "license": canonical, "obligations": terms},
                          scope=ledger.MEMBERS)
    row = LicenceAcceptance(org_id=actor.org_id, license=canonical, ledger_seq=entry.seq)
    session.add(row)
    session.commit()
    return row


def _check_licence(session: Session, actor: Principal | None, ref: str, row: OpenDataVersion,
                   accepted: str | None) -> None:
    terms = obligations(row.license, ref)
    if terms.is_empty():
        return
    if actor is None or actor.org_id is None:
        if accepted != row.license:
            raise Forbidden(f"{row.license} carries obligations ({'; '.join(terms.describe())}); accept them "
                            f"by sending accept_license={row.license}", license=row.license)
        return
    if session.scalar(select(LicenceAcceptance.id).where(LicenceAcceptance.org_id == actor.org_id,
                                                         LicenceAcceptance.license == row.license)) is None:
        raise Forbidden(f"{actor.org_name} has not accepted the obligations of {row.license} "
                        f"({'; '.join(terms.describe())}); POST /api/licences/accept first",
                        license=row.license)


def authorise(session: Session, actor: Principal | None, ref: str, version: str | None,
              accepted: str | None) -> OpenDataVersion:
    """The version the caller may download: 404 without the dataset's download right (as for a missing one),
    410 once withdrawn, 403 while the licence's obligations are not accepted."""
    row = version_of(session, actor, ref, version)
    dataset = session.get(Dataset, row.dataset_id)
    if not can_download_source(reader(session, actor), dataset):
        raise NotFound(f"no published version {version or '(any)'} of {ref}")
    if row.withdrawn_at is not None:
        raise Gone(f"{ref}@{row.version} was withdrawn: {row.withdrawn_reason}", reason=row.withdrawn_reason)
    _check_licence(session, actor, ref, row, accepted)
    return row


def count_download(session: Session, actor: Principal | None, row: OpenDataVersion) -> None:
    """Count a download started by the caller's org (anonymous callers together) and credit the owner once
    per downloading org and version (the policy's ``per_open_data_download``)."""
    org_id = ANONYMOUS if actor is None or actor.org_id is None else actor.org_id
    counter = session.scalar(select(OpenDataDownload).where(OpenDataDownload.version_id == row.id,
                                                            OpenDataDownload.org_id == org_id))
    if counter is None:
        counter = OpenDataDownload(version_id=row.id, org_id=org_id, count=0)
        session.add(counter)
    counter.count += 1
    dataset = session.get(Dataset, row.dataset_id)
    rules = credits.rules(session)
    if org_id not in (ANONYMOUS, dataset.org_id) and rules is not None and rules.per_open_data_download:
        credits.earn(session, session.get(Org, dataset.org_id), rules.per_open_data_download,
                     CreditReason.open_data, f"open-data:{row.id}:org:{org_id}",
                     {"dataset": f"{dataset.org.name}/{dataset.name}", "version": row.version})
    session.commit()


def blob_file(blobs: BlobStore, row: OpenDataVersion) -> Path:
    """The version's file, after checking it still has its SHA-256 (CorruptFile otherwise)."""
    path = blobs.path(row.sha256)
    VERIFIED.check(path, row.sha256)
    return path
