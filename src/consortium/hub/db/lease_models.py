"""The run leases of hub replicas: which replica drives each running run, until when (see ``hub/leases.py``)."""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from consortium.hub.db.models import Base


class RunLease(Base):
    """The replica ``holder`` drives the run until ``expires_at`` (Unix seconds) unless it renews the lease;
    ``epoch`` grows with every take, so a write fenced on (holder, epoch) fails once anyone took the lease."""

    __tablename__ = "run_leases"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True, autoincrement=False)
    holder: Mapped[str] = mapped_column(String(100))
    epoch: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float)
