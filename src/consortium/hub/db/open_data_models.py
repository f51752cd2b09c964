"""The hub's open data tables: published dataset versions, download counts and licence acceptances."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from consortium.hub.db.models import Base, utcnow


class OpenDataVersion(Base):
    """One immutable published version of a dataset: the file (a blob), its licence and datasheet."""

    __tablename__ = "open_data_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    version: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    table_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(BigInteger)
    license: Mapped[str] = mapped_column(String(1000))
    datasheet: Mapped[dict[str, Any]]
    predecessor_id: Mapped[int | None] = mapped_column(ForeignKey("open_data_versions.id"))
    published_seq: Mapped[int] = mapped_column(BigInteger)
    published_at: Mapped[datetime] = mapped_column(default=utcnow)
    withdrawn_reason: Mapped[str | None] = mapped_column(String(1000))
    withdrawn_at: Mapped[datetime | None]
    anonymity: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The node's anonymisation report (declared columns, measured k, l, t); None: none was sent."""
    synthetic: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """DP synthetic data: its release (epsilon, delta, noise multiplier, measurements); None: real rows."""

    parquet_sha256: Mapped[str | None] = mapped_column(String(64))
    """The Parquet rendering's blob (made from the CSV on its first request); None until then."""
    parquet_size: Mapped[int | None] = mapped_column(BigInteger)
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)


class OpenDataDownload(Base):
    """How many times an org (0: anonymous callers) started a download of a version."""

    __tablename__ = "open_data_downloads"
    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("open_data_versions.id"), index=True)
    org_id: Mapped[int] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    __table_args__ = (UniqueConstraint("version_id", "org_id"),)


class LicenceAcceptance(Base):
    """An org accepted the obligations of a licence (once; its ``licence.accepted`` ledger entry)."""

    __tablename__ = "licence_acceptances"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"), index=True)
    license: Mapped[str] = mapped_column(String(1000))
    ledger_seq: Mapped[int] = mapped_column(BigInteger)
    accepted_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (UniqueConstraint("org_id", "license"),)
