"""``consortium hub``: run the hub service."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from consortium.cli.common import err_console, fail

if TYPE_CHECKING:
    from consortium.config import HubSettings


def hub(
    db: Annotated[str | None, typer.Option("--db", envvar="CONSORTIUM_DB",
                                           help="SQLAlchemy URL; default sqlite in --data-dir")] = None,
    port: Annotated[int, typer.Option(help="TCP port")] = 8700,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    data_dir: Annotated[Path, typer.Option("--data-dir", help="blob store and default database")] = Path("hub-data"),
    admin_token: Annotated[str | None, typer.Option("--admin-token", envvar="CONSORTIUM_ADMIN_TOKEN",
                                                    help="admin API token; generated into data-dir if absent")] = None,
    max_upload_mb: Annotated[float | None, typer.Option(
        "--max-upload-mb", help="body limit of update and test-set uploads (default 64)")] = None,
    max_json_kb: Annotated[float | None, typer.Option(
        "--max-json-kb", help="body limit of every other authenticated route (default 1024)")] = None,
    auth_failure_limit: Annotated[int | None, typer.Option(
        "--auth-failure-limit", min=1,
        help="failed token, signature or enrolment attempts per client address and window before 429 "
             "(default 20)")] = None,
    auth_failure_window: Annotated[float | None, typer.Option(
        "--auth-failure-window", min=0.001, help="seconds of that window (default 60)")] = None,
    hub_key_file: Annotated[Path | None, typer.Option(
        "--hub-key-file", envvar="CONSORTIUM_HUB_KEY_FILE",
        help="the hub's Ed25519 signing key (made on first start; default data-dir/hub-key.pem)")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(
        "--checkpoint-every", min=1,
        help="sign a ledger checkpoint every this many entries (default 64)")] = None,
    checkpoint_interval: Annotated[float | None, typer.Option(
        "--checkpoint-interval", min=0.01,
        help="... or this many seconds after the last one when the ledger grew (default 10)")] = None,
    tls_cert: Annotated[Path | None, typer.Option(
        "--tls-cert", envvar="CONSORTIUM_TLS_CERT",
        help="serve HTTPS with this PEM certificate chain (needs --tls-key); see docs/deploy.md")] = None,
    tls_key: Annotated[Path | None, typer.Option(
        "--tls-key", envvar="CONSORTIUM_TLS_KEY", help="the PEM private key of --tls-cert")] = None,
    replica: Annotated[bool, typer.Option(
        "--replica", help="one of several hubs on this PostgreSQL --db and --blob-dir, behind a proxy "
                          "(env CONSORTIUM_REPLICAS=1); see docs/deploy.md")] = False,
    lease_s: Annotated[float | None, typer.Option(
        "--lease-s", min=0.1, help="with --replica: seconds a run's lease lasts unless renewed, i.e. what a "
                                   "killed replica costs its runs at most (env CONSORTIUM_LEASE_S; default 10)")] = None,
    blob_dir: Annotated[Path | None, typer.Option(
        "--blob-dir", envvar="CONSORTIUM_BLOB_DIR",
        help="the blob store (params, uploads, test sets); replicas share one; default data-dir/blobs")] = None,
) -> None:
    """Run the hub service (migrations are applied on start); HTTPS with --tls-cert and --tls-key."""
    import torch
    import uvicorn

    from consortium.config import HubSettings, freeze_startup_heap, torch_threads
    from consortium.hub.app import admin_token_path, create_app

    torch.set_num_threads(torch_threads())
    try:
        settings = HubSettings.from_args(db, data_dir, admin_token, max_upload_mb, max_json_kb=max_json_kb,
                                         auth_failure_limit=auth_failure_limit,
                                         auth_failure_window_s=auth_failure_window, hub_key_file=hub_key_file,
                                         checkpoint_every=checkpoint_every,
                                         checkpoint_interval_s=checkpoint_interval,
                                         tls_cert=tls_cert, tls_key=tls_key, replica=replica, lease_s=lease_s,
                                         blob_dir=blob_dir)
        tls = _tls_files(settings)
    except ValueError as exc:
        fail(str(exc))
    application = create_app(settings)
    if not settings.admin_token:
        err_console.print(f"admin token: {admin_token_path(settings)}")
    scheme = "https" if settings.tls_cert else "http"
    err_console.print(f"hub serving {scheme}://{host}:{port} (data in {data_dir})", soft_wrap=True)
    freeze_startup_heap()
    uvicorn.run(application, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3,
                timeout_keep_alive=KEEP_ALIVE_S, **tls)


KEEP_ALIVE_S = 75
"""How long an idle keep-alive connection stays open. A node's connection idles while it trains; with uvicorn's
default of 5 s the hub closed it mid-round, and an upload sent just as it closed failed (`bench scale` at
N = 1,000 with 0-10 s of compute: 3 uploads in 22,006 requests)."""


def _tls_files(settings: HubSettings) -> dict[str, str]:
    """uvicorn's TLS arguments, after checking that the certificate and key load and match (ValueError
    otherwise, before the hub starts)."""
    import ssl

    if settings.tls_cert is None:
        return {}
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.tls_cert, settings.tls_key, password=lambda: "")  # an encrypted key fails, no prompt
    except ssl.SSLError as exc:
        raise ValueError(f"--tls-cert {settings.tls_cert} and --tls-key {settings.tls_key} do not load as a "
                         f"PEM certificate chain and its private key ({exc.reason or exc})") from None
    return {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
