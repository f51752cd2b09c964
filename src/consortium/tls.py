"""TLS between hub clients (nodes, CLI) and the hub: which CAs a client trusts, and the clear error for a
certificate it refuses. Verification is never switched off: a private CA is trusted by naming its bundle."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

CA_HINT = "give the CA that signed it with --ca-file (or CONSORTIUM_CA_FILE)"
HOST_HINT = "use a hub URL whose host name or address the certificate names"
_NAME_MISMATCH = {62, 64}
"""OpenSSL's verify codes of a certificate for another host name or IP address."""


class HubTLSError(httpx.ConnectError):
    """The TLS handshake with the hub failed: its certificate is not trusted (another CA, another host name)
    or it does not speak TLS. The message names the hub's URL and the failure."""


def tls_context(ca_file: str | Path | None) -> ssl.SSLContext:
    """What a hub client trusts: only the CA certificates in the PEM bundle ``ca_file``, else the system's
    trust store (certifi's bundle where the system has none). Host names are always checked; ``ValueError``
    when ``ca_file`` holds no readable CA certificate."""
    if ca_file is None:
        context = ssl.create_default_context()
        if not context.cert_store_stats()["x509_ca"]:
            import certifi

            context.load_verify_locations(certifi.where())
        return context
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"CA file {ca_file}: not a readable PEM bundle of CA certificates ({exc})") from None
    if not context.cert_store_stats()["x509_ca"]:
        raise ValueError(f"CA file {ca_file}: holds no CA certificate")
    return context


def tls_refusal(base_url: str, exc: httpx.ConnectError) -> HubTLSError | None:
    """The clear error for the TLS failure behind ``exc``; None when the connection failed otherwise."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    if isinstance(cause, ssl.SSLCertVerificationError):
        hint = HOST_HINT if cause.verify_code in _NAME_MISMATCH else CA_HINT
        message = (f"the hub at {base_url} presented a TLS certificate that failed verification "
                   f"({str(cause.verify_message).rstrip('.')}); {hint}")
    else:
        message = (f"the TLS handshake with the hub at {base_url} failed ({cause.reason or cause}): is it serving "
                   "HTTPS?")
    return HubTLSError(message, request=exc.request)
