"""Settings of the hub process, from CLI flags or environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class HubSettings:
    db_url: str
    data_dir: Path
    admin_token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES

    @classmethod
    def from_args(
        cls, db_url: str | None, data_dir: Path, admin_token: str | None = None, max_upload_mb: float | None = None
    ) -> HubSettings:
        data_dir = Path(data_dir).resolve()
        url = db_url or os.environ.get("CONSORTIUM_DB") or f"sqlite:///{data_dir / 'hub.db'}"
        token = admin_token or os.environ.get("CONSORTIUM_ADMIN_TOKEN")
        limit = int(max_upload_mb * 1024 * 1024) if max_upload_mb else DEFAULT_MAX_UPLOAD_BYTES
        return cls(db_url=url, data_dir=data_dir, admin_token=token, max_upload_bytes=limit)


def torch_threads() -> int:
    """Intra-op threads per process (CONSORTIUM_TORCH_THREADS, default 1): many processes share few cores."""
    return int(os.environ.get("CONSORTIUM_TORCH_THREADS", "1"))
