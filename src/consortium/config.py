"""Settings of the hub and node processes, from CLI flags or environment variables."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_JSON_BYTES = 1024 * 1024
DEFAULT_MAX_PUBLIC_BYTES = 16 * 1024
DEFAULT_AUTH_FAILURE_LIMIT = 20
DEFAULT_AUTH_FAILURE_WINDOW_S = 60.0
DEFAULT_POLL_WAIT_S = 25.0
MAX_POLL_WAIT_S = 60.0
"""The longest long poll the hub accepts (its ``wait`` query parameter)."""
DEFAULT_CHECKPOINT_EVERY = 64
DEFAULT_CHECKPOINT_INTERVAL_S = 10.0
DEFAULT_WITNESS_EVERY_S = 10.0
DEFAULT_LEASE_S = 10.0


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
    tls_cert: Path | None = None
    """The hub's TLS certificate chain (PEM): with ``tls_key``, the hub serves HTTPS only."""
    tls_key: Path | None = None
    replica: bool = False
    """One of several hub processes on this PostgreSQL database and blob store: run leases decide which one
    drives each run, uploads for another replica's runs are stored at once, LISTEN/NOTIFY wakes long polls."""
    lease_s: float = DEFAULT_LEASE_S
    """With ``replica``: how long a run's lease lasts unless its driver renews it (what a killed replica costs)."""
    blob_dir: Path | None = None
    """The blob store's directory; None: ``data_dir/blobs``. Replicas share one (e.g. a network file system)."""
    telemetry: bool = False
    """FastAPI's OpenTelemetry spans, metrics and logs (``CONSORTIUM_HUB_TELEMETRY=1``), for a deployment with
    a configured OpenTelemetry provider. Off by default: switched on, FastAPI looks for a provider on every
    request (an environment lookup among others), a cost the node endpoints pay thousands of times a round."""

    @property
    def key_file(self) -> Path:
        return self.hub_key_file or self.data_dir / "hub-key.pem"

    @property
    def blobs(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

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
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        replica: bool = False,
        lease_s: float | None = None,
        blob_dir: Path | None = None,
    ) -> HubSettings:
        """The settings from CLI values (None: not given), the environment and the defaults; ValueError naming
        the flag and its variable for a TLS certificate without its key (or the reverse) or a missing file."""
        data_dir = Path(data_dir).resolve()
        url = db_url or os.environ.get("CONSORTIUM_DB") or f"sqlite:///{data_dir / 'hub.db'}"
        token = admin_token or os.environ.get("CONSORTIUM_ADMIN_TOKEN")
        limit = int(max_upload_mb * 1024 * 1024) if max_upload_mb else DEFAULT_MAX_UPLOAD_BYTES
        json_limit = int(max_json_kb * 1024) if max_json_kb else DEFAULT_MAX_JSON_BYTES
        key_file = hub_key_file or os.environ.get("CONSORTIUM_HUB_KEY_FILE")
        replica = replica or os.environ.get("CONSORTIUM_REPLICAS", "") not in ("", "0")
        if replica and not url.startswith("postgresql"):
            raise ValueError("--replica (or CONSORTIUM_REPLICAS=1) needs a PostgreSQL --db (or CONSORTIUM_DB): "
                             "replicas share its run leases and wake each other with LISTEN/NOTIFY")
        lease = lease_s or float(os.environ.get("CONSORTIUM_LEASE_S") or DEFAULT_LEASE_S)
        if not lease > 0:
            raise ValueError(f"--lease-s (or CONSORTIUM_LEASE_S) must be positive, got {lease}")
        blobs = blob_dir or os.environ.get("CONSORTIUM_BLOB_DIR")
        return cls(
            db_url=url, data_dir=data_dir, admin_token=token, max_upload_bytes=limit,
            max_json_bytes=json_limit,
            auth_failure_limit=auth_failure_limit or DEFAULT_AUTH_FAILURE_LIMIT,
            auth_failure_window_s=auth_failure_window_s or DEFAULT_AUTH_FAILURE_WINDOW_S,
            hub_key_file=Path(key_file).resolve() if key_file else None,
            checkpoint_every=checkpoint_every or DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval_s=checkpoint_interval_s or DEFAULT_CHECKPOINT_INTERVAL_S,
            **_tls_pair(tls_cert, tls_key),
            replica=replica, lease_s=lease, blob_dir=Path(blobs).resolve() if blobs else None,
            telemetry=os.environ.get("CONSORTIUM_HUB_TELEMETRY", "") not in ("", "0"),
        )


def _tls_pair(cert: Path | None, key: Path | None) -> dict[str, Path | None]:
    cert_file = _existing_file(cert, "--tls-cert", "CONSORTIUM_TLS_CERT")
    key_file = _existing_file(key, "--tls-key", "CONSORTIUM_TLS_KEY")
    if (cert_file is None) != (key_file is None):
        given, missing = ("--tls-cert", "--tls-key") if key_file is None else ("--tls-key", "--tls-cert")
        raise ValueError(f"{given} needs {missing} (or CONSORTIUM_{missing[2:].upper().replace('-', '_')}): "
                         "HTTPS takes the certificate and its private key")
    return {"tls_cert": cert_file, "tls_key": key_file}


def _existing_file(value: Path | str | None, flag: str, variable: str) -> Path | None:
    """``value``, else the environment variable, as an absolute path; ValueError when no such file exists."""
    raw = value or os.environ.get(variable) or None
    if raw is None:
        return None
    path = Path(raw).resolve()
    if not path.is_file():
        raise ValueError(f"{flag} (or {variable}): no such file {path}")
    return path


@dataclass(frozen=True)
class NodeSettings:
    """Settings of an organisation's node process: each field from its CLI flag, else its environment
    variable, else the default.

    - ``hub_url``: ``--hub``, else ``CONSORTIUM_HUB`` (required);
    - ``org_dir``: ``--org-dir``, else ``CONSORTIUM_ORG_DIR`` (required; the org's keys, datasets, approvals);
    - ``poll_wait_s``: ``--poll-wait``, else ``CONSORTIUM_POLL_WAIT`` (seconds, 0..60, default 25);
    - ``enrol_token``: ``--enrol-token``, else ``CONSORTIUM_ENROL_TOKEN`` (one-time; enrol before polling);
    - ``witness_every_s``: ``--witness-every``, else ``CONSORTIUM_WITNESS_EVERY`` (seconds between checks and
      cosignatures of the hub's ledger checkpoint, at least 0.05, default 10);
    - ``ca_file``: ``--ca-file``, else ``CONSORTIUM_CA_FILE`` (the PEM bundle of CAs an ``https://`` hub's
      certificate must chain to; default the system's trust store);
    - ``torch_threads``: ``CONSORTIUM_TORCH_THREADS`` (default 1);
    - ``secagg_halt_before``: ``CONSORTIUM_SECAGG_HALT_BEFORE`` (fault injection for tests: a SecAgg stage;
      the node halts just before sending that stage's message, as a node that crashed there would).
    """

    hub_url: str
    org_dir: Path
    poll_wait_s: float = DEFAULT_POLL_WAIT_S
    """How long one long poll for a task waits at the hub."""
    enrol_token: str | None = None
    witness_every_s: float = DEFAULT_WITNESS_EVERY_S
    """How often the node's ledger witness checks and cosigns the hub's newest checkpoint."""
    torch_threads: int = 1
    secagg_halt_before: str | None = None
    ca_file: Path | None = None

    @classmethod
    def from_args(
        cls,
        hub_url: str | None = None,
        org_dir: Path | None = None,
        poll_wait_s: float | None = None,
        enrol_token: str | None = None,
        witness_every_s: float | None = None,
        ca_file: Path | None = None,
    ) -> NodeSettings:
        """The settings from CLI values (None: not given), the environment and the defaults; ValueError
        naming the flag and its variable when a value is missing or out of range."""
        hub = hub_url or os.environ.get("CONSORTIUM_HUB")
        if not hub:
            raise ValueError("--hub (or CONSORTIUM_HUB) is required: the hub's base URL")
        directory = org_dir or os.environ.get("CONSORTIUM_ORG_DIR")
        if not directory:
            raise ValueError("--org-dir (or CONSORTIUM_ORG_DIR) is required: the org's local directory")
        wait = poll_wait_s
        if wait is None:
            wait = _number("CONSORTIUM_POLL_WAIT", DEFAULT_POLL_WAIT_S)
        if not 0 <= wait <= MAX_POLL_WAIT_S:
            raise ValueError(
                f"--poll-wait (or CONSORTIUM_POLL_WAIT) must be within 0..{MAX_POLL_WAIT_S:g} s, got {wait:g}"
            )
        witness = witness_every_s
        if witness is None:
            witness = _number("CONSORTIUM_WITNESS_EVERY", DEFAULT_WITNESS_EVERY_S)
        if witness < 0.05:
            raise ValueError(f"--witness-every (or CONSORTIUM_WITNESS_EVERY) must be at least 0.05 s, got {witness:g}")
        return cls(hub_url=hub, org_dir=Path(directory).resolve(), poll_wait_s=wait,
                   enrol_token=enrol_token or os.environ.get("CONSORTIUM_ENROL_TOKEN") or None,
                   witness_every_s=witness, torch_threads=torch_threads(),
                   secagg_halt_before=os.environ.get("CONSORTIUM_SECAGG_HALT_BEFORE") or None,
                   ca_file=_existing_file(ca_file, "--ca-file", "CONSORTIUM_CA_FILE"))


def _number(variable: str, default: float) -> float:
    raw = os.environ.get(variable)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{variable} must be a number of seconds, got {raw!r}") from None


def torch_threads() -> int:
    """Intra-op threads per process (CONSORTIUM_TORCH_THREADS, default 1): many processes share few cores."""
    raw = os.environ.get("CONSORTIUM_TORCH_THREADS", "1")
    try:
        threads = int(raw)
    except ValueError:
        raise ValueError(f"CONSORTIUM_TORCH_THREADS must be a whole number, got {raw!r}") from None
    if threads < 1:
        raise ValueError(f"CONSORTIUM_TORCH_THREADS must be at least 1, got {threads}")
    return threads


def freeze_startup_heap() -> None:
    """Move every object alive now out of the cyclic garbage collector's sight, for the life of this process:
    called once start-up is done (the hub once its app is built: modules, torch, SQLAlchemy's mappers, the
    app, ~400,000 objects; the scale bench's workers once they have imported what they use). Without it each full collection
    walks them all: one took 164 ms in a 100-node round, a pause every request in flight waits out (measured
    in `bench scale`). Not for a process that builds many apps (the tests): it would keep each one's cyclic
    garbage forever."""
    gc.collect()
    gc.freeze()
