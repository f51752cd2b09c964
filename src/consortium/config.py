"""Settings of the hub process, from CLI flags or environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_JSON_BYTES = 1024 * 1024
DEFAULT_MAX_PUBLIC_BYTES = 16 * 1024
DEFAULT_AUTH_FAILURE_LIMIT = 20
DEFAULT_AUTH_FAILURE_WINDOW_S = 60.0
DEFAULT_CHECKPOINT_EVERY = 64
DEFAULT_CHECKPOINT_INTERVAL_S = 10.0


@dataclass(frozen=True)
class HubSettings:
    db_url: str
    data_dir: Path
    admin_token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    """Body limit of the two upload routes (updates, test sets)."""
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    """Body limit of every other authenticated route."""
    max_public_bytes: int = DEFAULT_MAX_PUBLIC_BYTES
    """Body limit of the routes that need no credentials (enrolment, health, API description)."""
    auth_failure_limit: int = DEFAULT_AUTH_FAILURE_LIMIT
    """Failed token authentications, signature verifications or enrolments (each counted apart) that one
    client address may make in ``auth_failure_window_s`` before it gets 429."""
    auth_failure_window_s: float = DEFAULT_AUTH_FAILURE_WINDOW_S
    hub_key_file: Path | None = None
    """The hub's Ed25519 key (PKCS8 PEM, 0600, made on first start); None: ``data_dir/hub-key.pem``. Replicas
    sharing one database share it (``CONSORTIUM_HUB_KEY_FILE``)."""
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    """A signed ledger checkpoint at least every this many new entries..."""
    checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S
    """...or this many seconds after the last one, when the ledger grew."""

    @property
    def key_file(self) -> Path:
        return self.hub_key_file or self.data_dir / "hub-key.pem"

    @classmethod
    def from_args(
        cls,
        db_url: str | None,
        data_dir: Path,
        admin_token: str | None = None,
        max_upload_mb: float | None = None,
        *,
        max_json_kb: float | None = None,
        auth_failure_limit: int | None = None,
        auth_failure_window_s: float | None = None,
        hub_key_file: Path | None = None,
        checkpoint_every: int | None = None,
        checkpoint_interval_s: float | None = None,
    ) -> HubSettings:
        data_dir = Path(data_dir).resolve()
        url = db_url or os.environ.get("CONSORTIUM_DB") or f"sqlite:///{data_dir / 'hub.db'}"
        token = admin_token or os.environ.get("CONSORTIUM_ADMIN_TOKEN")
        limit = int(max_upload_mb * 1024 * 1024) if max_upload_mb else DEFAULT_MAX_UPLOAD_BYTES
        json_limit = int(max_json_kb * 1024) if max_json_kb else DEFAULT_MAX_JSON_BYTES
        key_file = hub_key_file or os.environ.get("CONSORTIUM_HUB_KEY_FILE")
        return cls(
            db_url=url, data_dir=data_dir, admin_token=token, max_upload_bytes=limit,
            max_json_bytes=json_limit,
            auth_failure_limit=auth_failure_limit or DEFAULT_AUTH_FAILURE_LIMIT,
            auth_failure_window_s=auth_failure_window_s or DEFAULT_AUTH_FAILURE_WINDOW_S,
            hub_key_file=Path(key_file).resolve() if key_file else None,
            checkpoint_every=checkpoint_every or DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval_s=checkpoint_interval_s or DEFAULT_CHECKPOINT_INTERVAL_S,
        )


def torch_threads() -> int:
    """Intra-op threads per process (CONSORTIUM_TORCH_THREADS, default 1): many processes share few cores."""
    return int(os.environ.get("CONSORTIUM_TORCH_THREADS", "1"))
