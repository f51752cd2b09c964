"""What a hub client trusts: a CA file's certificates only (else the system's store), host names always
checked, and a refused certificate or a peer without TLS named clearly with the hub's URL."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from consortium.client import HubClient
from consortium.tls import HubTLSError, tls_context


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serving(cert: Path | None = None, key: Path | None = None) -> Iterator[int]:
    """A small HTTP server on 127.0.0.1 (HTTPS with ``cert`` and ``key``); yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    if cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_the_default_trusts_a_store_and_a_ca_file_trusts_only_its_certificates(private_pki) -> None:
    assert tls_context(None).cert_store_stats()["x509_ca"] > 0
    private = tls_context(private_pki.ca)
    assert private.cert_store_stats()["x509_ca"] == 1
    assert private.verify_mode == ssl.CERT_REQUIRED and private.check_hostname


def test_a_missing_or_wrong_ca_file_is_refused_by_name(private_pki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"CA file {tmp_path / 'none.pem'}: not a readable PEM bundle"):
        tls_context(tmp_path / "none.pem")
    with pytest.raises(ValueError, match="CA file .*hub-key.pem"):
        tls_context(private_pki.key)
    with pytest.raises(ValueError, match="holds no CA certificate"):
        tls_context(private_pki.cert)


def test_a_hub_certificate_from_the_named_ca_is_trusted(private_pki) -> None:
    with serving(private_pki.cert, private_pki.key) as port:
        for host in ("127.0.0.1", "localhost"):
            with HubClient(f"https://{host}:{port}", ca_file=private_pki.ca) as client:
                assert client.health() == {"status": "ok"}


def test_a_certificate_from_another_ca_is_refused_naming_the_hub_and_the_failure(private_pki) -> None:
    with serving(private_pki.cert, private_pki.key) as port:
        url = f"https://127.0.0.1:{port}"
        for ca_file in (private_pki.other_ca, None):
            with HubClient(url, ca_file=ca_file) as client, pytest.raises(HubTLSError) as refused:
                client.health()
            message = str(refused.value)
            assert url in message and "unable to get local issuer certificate" in message
            assert "--ca-file" in message


def test_a_certificate_for_another_host_is_refused(private_pki) -> None:
    with serving(private_pki.other_host_cert, private_pki.other_host_key) as port:
        with HubClient(f"https://127.0.0.1:{port}", ca_file=private_pki.ca) as client, \
                pytest.raises(HubTLSError, match="IP address mismatch.*whose host name or address the certif"):
            client.health()
        with HubClient(f"https://localhost:{port}", ca_file=private_pki.ca) as client, \
                pytest.raises(HubTLSError, match="Hostname mismatch"):
            client.health()


def test_https_to_a_plain_http_hub_and_http_to_an_https_hub_fail_cleanly(private_pki) -> None:
    with serving() as port:
        with HubClient(f"https://127.0.0.1:{port}", ca_file=private_pki.ca) as client, \
                pytest.raises(HubTLSError, match=f"TLS handshake with the hub at https://127.0.0.1:{port} failed"):
            client.health()
    with serving(private_pki.cert, private_pki.key) as port:
        with HubClient(f"http://127.0.0.1:{port}", timeout=5.0) as client, pytest.raises(httpx.TransportError):
            client.health()
