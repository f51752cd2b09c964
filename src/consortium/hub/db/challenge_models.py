"""The hub's challenge tables: metadata, submissions and the host's signed scores (never a test row)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from consortium.hub.db.models import Base, utcnow


class Challenge(Base):
    """A challenge as its host signed it (``statement``: the ``challenge.opened`` payload)."""

    __tablename__ = "challenges"
    id: Mapped[int] = mapped_column(primary_key=True)
    host_org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    statement: Mapped[dict[str, Any]]
    signature: Mapped[str] = mapped_column(String(200))
    deadline: Mapped[datetime]
    opened_seq: Mapped[int] = mapped_column(BigInteger)
    finalised_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (UniqueConstraint("host_org_id", "name"),)


class ChallengeSubmission(Base):
    """One submission: its weights (a blob), the spec they fit, and each part's signed score once posted."""

    __tablename__ = "challenge_submissions"
    id: Mapped[int] = mapped_column(primary_key=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenges.id"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"))
    team: Mapped[list[Any]]
    model_id: Mapped[int | None] = mapped_column(Integer)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    algorithm: Mapped[dict[str, Any]]
    submitted_at: Mapped[datetime] = mapped_column(index=True)
    public_score: Mapped[float | None] = mapped_column(Float)
    public_error: Mapped[str | None] = mapped_column(String(500))
    public_seq: Mapped[int | None] = mapped_column(BigInteger)
    private_score: Mapped[float | None] = mapped_column(Float)
    private_error: Mapped[str | None] = mapped_column(String(500))
    private_seq: Mapped[int | None] = mapped_column(BigInteger)
