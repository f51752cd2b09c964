"""Organisation keys (Ed25519), signed requests, API tokens and canonical hashing.

A node proves it speaks for its organisation by signing every request over its method, path (with query),
the SHA-256 of its body, a timestamp and a one-time nonce. The hub checks all five.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HEADER_KEY = "X-Consortium-Key"
HEADER_TIMESTAMP = "X-Consortium-Timestamp"
HEADER_NONCE = "X-Consortium-Nonce"
HEADER_SIGNATURE = "X-Consortium-Signature"
SIGNATURE_HEADERS = (HEADER_KEY, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)
MAX_CLOCK_SKEW_S = 300.0
KEY_FILE = "org.key"
IDENTITY_FILE = "org.json"


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no whitespace, no NaN): what gets hashed and signed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def key_id(public_key_b64: str) -> str:
    """Short stable identifier of a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    return sha256_hex(_unb64(public_key_b64))[:16]


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """Parse a base64 raw 32-byte Ed25519 public key; ValueError with the reason otherwise."""
    try:
        raw = _unb64(text)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"not valid base64: {exc}") from exc
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_signature(public_key_b64: str, message: bytes, signature_b64: str) -> bool:
    """True when ``signature_b64`` is the key's signature of ``message``; False on any bad input."""
    try:
        public_key_from_b64(public_key_b64).verify(_unb64(signature_b64), message)
    except (InvalidSignature, ValueError, binascii.Error, UnicodeEncodeError):
        return False
    return True


@dataclass(frozen=True)
class OrgIdentity:
    """An organisation's name and key pair, loaded from its local directory."""

    org: str
    private_key: Ed25519PrivateKey
    public_key_b64: str

    @property
    def key_id(self) -> str:
        return key_id(self.public_key_b64)

    def sign(self, message: bytes) -> str:
        return _b64(self.private_key.sign(message))


def _public_b64(private_key: Ed25519PrivateKey) -> str:
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _b64(raw)


def generate_org_key(directory: Path, org_name: str) -> OrgIdentity:
    """Create ``org.key`` (PKCS8 PEM, mode 0600) and ``org.json``; never overwrites an existing key."""
    directory = Path(directory)
    key_path = directory / KEY_FILE
    if key_path.exists():
        raise FileExistsError(f"{key_path} already exists; refusing to overwrite an organisation key")
    directory.mkdir(parents=True, exist_ok=True)
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    identity = OrgIdentity(org_name, private_key, _public_b64(private_key))
    (directory / IDENTITY_FILE).write_text(
        json.dumps({"org": org_name, "public_key": identity.public_key_b64, "key_id": identity.key_id}, indent=1)
        + "\n"
    )
    return identity


def load_org_identity(directory: Path) -> OrgIdentity:
    """Load the key pair made by :func:`generate_org_key` (FileNotFoundError naming what is missing)."""
    directory = Path(directory)
    key_path, info_path = directory / KEY_FILE, directory / IDENTITY_FILE
    for path in (key_path, info_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found; run `consortium org init NAME --dir ...` first")
    private_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(private_key, Ed25519PrivateKey):
        raise ValueError(f"{key_path} is not an Ed25519 private key")
    info = json.loads(info_path.read_text())
    public = _public_b64(private_key)
    if info.get("public_key") != public:
        raise ValueError(f"{info_path} does not describe the key in {key_path}")
    return OrgIdentity(info["org"], private_key, public)


# ---------------------------------------------------------------------------------------------- requests


class SignatureError(Exception):
    """A signed request was rejected; ``reason`` says why, for the 401 message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def canonical_request(method: str, path_with_query: str, body: bytes, timestamp: int, nonce: str) -> bytes:
    return f"{method.upper()}\n{path_with_query}\n{sha256_hex(body)}\n{timestamp}\n{nonce}".encode()


def sign_request(identity: OrgIdentity, method: str, path_with_query: str, body: bytes, now: float) -> dict[str, str]:
    """The four signature headers for one request."""
    timestamp = int(now)
    nonce = secrets.token_hex(16)
    signature = identity.sign(canonical_request(method, path_with_query, body, timestamp, nonce))
    return {
        HEADER_KEY: identity.key_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: signature,
    }


def verify_request(
    headers: Mapping[str, str],
    method: str,
    path_with_query: str,
    body: bytes,
    now: float,
    lookup_key: Callable[[str], str | None],
    seen_nonce: Callable[[str, str], bool],
    max_skew: float = MAX_CLOCK_SKEW_S,
) -> str:
    """Check a signed request and return its key id; SignatureError with the reason otherwise.

    The nonce is recorded only after the signature is valid, so unauthenticated junk cannot burn nonces.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in SIGNATURE_HEADERS if h.lower() not in lowered]
    if missing:
        raise SignatureError(f"missing header(s): {', '.join(missing)}")
    kid = lowered[HEADER_KEY.lower()]
    nonce = lowered[HEADER_NONCE.lower()]
    try:
        timestamp = int(lowered[HEADER_TIMESTAMP.lower()])
    except ValueError as exc:
        raise SignatureError("timestamp is not an integer number of seconds") from exc
    skew = abs(now - timestamp)
    if skew > max_skew:
        raise SignatureError(
            f"timestamp is {skew:.0f} s away from the hub clock (limit {max_skew:.0f} s)"
        )
    if not 16 <= len(nonce) <= 64:
        raise SignatureError("nonce must have 16 to 64 characters")
    public_key = lookup_key(kid)
    if public_key is None:
        raise SignatureError(f"unknown or revoked key id {kid!r}")
    message = canonical_request(method, path_with_query, body, timestamp, nonce)
    if not verify_signature(public_key, message, lowered[HEADER_SIGNATURE.lower()]):
        raise SignatureError("bad signature for this method, path, body, timestamp and nonce")
    if seen_nonce(kid, nonce):
        raise SignatureError("nonce already used (replayed request)")
    return kid


class SignedAuth(httpx.Auth):
    """httpx authentication that signs every request with the organisation key."""

    requires_request_body = True

    def __init__(self, identity: OrgIdentity, clock: Callable[[], float] = time.time) -> None:
        self.identity = identity
        self.clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        path = request.url.raw_path.decode("ascii")
        request.headers.update(sign_request(self.identity, request.method, path, request.content, self.clock()))
        yield request


# ---------------------------------------------------------------------------------------------- tokens


def new_api_token() -> str:
    """A fresh 256-bit API token."""
    return "csm_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """How tokens are stored. Tokens carry 256 random bits, so a fast hash cannot be brute-forced."""
    return sha256_hex(token.encode())


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def approval_message(project_id: int, spec_hash: str) -> bytes:
    """What an organisation signs to approve a project spec."""
    return f"approve:{project_id}:{spec_hash}".encode()
