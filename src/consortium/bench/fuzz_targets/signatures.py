"""The request-signature target: an HTTP request's signature headers as the gate and ``deps`` check them.

The input is a request in HTTP/1.1's shape: ``METHOD path-and-query`` on the first line, ``Name: value``
header lines, an empty line, the body (decoded as Latin-1, as ASGI servers hand headers on). The target runs
the gate's precheck (:func:`consortium.crypto.precheck_request`, before any body byte is read) and the full
check (:func:`consortium.crypto.verify_request`) against one admitted key at a fixed clock, so the seeds
stay validly signed; and the key parsing of enrolment (:func:`consortium.crypto.key_id`). Documented
refusals: :class:`~consortium.crypto.SignatureError` (the hub's 401), ``ValueError`` for a malformed key;
:func:`consortium.crypto.verify_signature` never raises.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consortium import crypto
from consortium.bench.fuzz_targets import Target

NOW = 1_760_000_000.0
"""The hub's clock in this target (fixed, so that a seed's timestamp stays in the window)."""
IDENTITY = crypto.OrgIdentity.from_private_key("north", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


def _lookup(kid: str) -> str | None:
    return IDENTITY.public_key_b64 if kid == IDENTITY.key_id else None


def parse_request(data: bytes) -> tuple[str, str, dict[str, str], bytes]:
    """Method, path, headers (lower-case names, as the ASGI scope has them) and body of ``data``."""
    head, _, body = data.partition(b"\r\n\r\n") if b"\r\n\r\n" in data else data.partition(b"\n\n")
    lines = head.decode("latin-1").splitlines()
    method, _, path = (lines[0] if lines else "").partition(" ")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, path, headers, body


def check(data: bytes) -> None:
    method, path, headers, body = parse_request(data)
    try:
        kid = crypto.precheck_request(headers, NOW, _lookup)
    except crypto.SignatureError as exc:
        assert exc.reason, "a refusal without a reason"
        kid = None
    seen: set[tuple[str, str]] = set()

    def seen_nonce(key: str, nonce: str) -> bool:
        found = (key, nonce) in seen
        seen.add((key, nonce))
        return found

    try:
        verified = crypto.verify_request(headers, method, path, body, NOW, _lookup, seen_nonce)
    except crypto.SignatureError:
        verified = None
    else:
        assert verified == kid == IDENTITY.key_id, "verify accepted what the precheck refused"
        try:
            crypto.verify_request(headers, method, path, body, NOW, _lookup, seen_nonce)
        except crypto.SignatureError:
            pass
        else:
            raise AssertionError("a replayed request was accepted")
    key = headers.get(crypto.HEADER_KEY.lower(), "")
    signature = headers.get(crypto.HEADER_SIGNATURE.lower(), "")
    assert crypto.verify_signature(key, body, signature) in (True, False)
    try:
        crypto.key_id(key)
    except ValueError:
        pass


def _signed(method: str, path: str, body: bytes, **overrides: str) -> bytes:
    nonce = crypto.sha256_hex(f"{method} {path}".encode())[:32]
    signature = IDENTITY.sign(crypto.canonical_request(method, path, body, int(NOW), nonce))
    headers = {crypto.HEADER_KEY: IDENTITY.key_id, crypto.HEADER_TIMESTAMP: str(int(NOW)),
               crypto.HEADER_NONCE: nonce, crypto.HEADER_SIGNATURE: signature} | overrides
    head = "\r\n".join([f"{method} {path}", *(f"{name}: {value}" for name, value in headers.items())])
    return head.encode("latin-1") + b"\r\n\r\n" + body


def seeds() -> dict[str, bytes]:
    update = _signed("POST", "/api/node/tasks/3/update?wait=30", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return {
        "signed-get": _signed("GET", "/api/node/tasks/next?wait=30", b""),
        "signed-post": update,
        "bad-signature": update.replace(b"Signature: ", b"Signature: A", 1),
        "stale-timestamp": _signed("GET", "/api/health", b"", **{crypto.HEADER_TIMESTAMP: "1000000000"}),
        "unknown-key": _signed("GET", "/", b"", **{crypto.HEADER_KEY: "0123456789abcdef"}),
        "public-key-as-kid": _signed("GET", "/", b"", **{crypto.HEADER_KEY: IDENTITY.public_key_b64}),
        "missing": b"GET /api/runs\r\nX-Consortium-Key: abc\r\n\r\n",
    }


TARGETS = {"signature": Target("signature", __doc__ or "", check, seeds)}
