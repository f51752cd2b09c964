"""Organisation keys, request signing, API tokens and canonical hashing.

Every organisation holds one Ed25519 key pair. The private key lives in ``<dir>/org.key`` (PKCS8 PEM,
mode 0600) and the public half, with the org's name and key id, in ``<dir>/org.json``. Nodes sign every
HTTP request with that key; the hub checks the signature, the key's standing, the timestamp and a
single-use nonce (:func:`verify_request`). Apart from reading and writing those two key files this module
is pure: the clock is always passed in, the only randomness is key, nonce and token generation.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consortium.atomic import write_bytes_atomic, write_json_atomic

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_FILE = "org.key"
IDENTITY_FILE = "org.json"

HEADER_KEY = "X-Consortium-Key"
HEADER_TIMESTAMP = "X-Consortium-Timestamp"
HEADER_NONCE = "X-Consortium-Nonce"
HEADER_SIGNATURE = "X-Consortium-Signature"
SIGNATURE_HEADERS = (HEADER_KEY, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)

MAX_CLOCK_SKEW_S = 300.0
TOKEN_PREFIX = "csm_"

_PUBLIC_KEY_BYTES = 32
_SIGNATURE_BYTES = 64
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}", re.ASCII)
_NONCE_RE = re.compile(r"[0-9a-f]{32}", re.ASCII)


# ---------------------------------------------------------------------------------------------- hashing


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    """The one byte encoding used for everything that is hashed or signed.

    Sorted keys, no whitespace, UTF-8 kept as is, and no NaN or infinity (they have no JSON form, so two
    implementations could disagree on them). Raises ``ValueError`` for NaN/infinity and ``TypeError`` for
    objects JSON cannot represent.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


# ---------------------------------------------------------------------------------------------- keys


def _b64decode_strict(value: str, what: str) -> bytes:
    if not isinstance(value, str | bytes):
        raise ValueError(f"{what} must be a base64 string, not {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} is not valid base64: {exc}") from None


def _raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@functools.lru_cache(maxsize=4096)
def public_key_from_b64(s: str) -> Ed25519PublicKey:
    """Parse a base64 raw 32-byte Ed25519 public key; ``ValueError`` on bad base64 or the wrong length. The
    hub checks each request against its org's key: parsed keys (immutable) are kept, most recent 4,096."""
    raw = _b64decode_strict(s, "public key")
    if len(raw) != _PUBLIC_KEY_BYTES:
        raise ValueError(f"public key must be {_PUBLIC_KEY_BYTES} raw bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(public_key_b64: str) -> str:
    """Short stable name of a public key: the first 16 hex characters of SHA-256 of its raw 32 bytes."""
    raw = _raw_public_key(public_key_from_b64(public_key_b64))
    return sha256_hex(raw)[:16]


def verify_signature(public_key_b64: str, message: bytes, signature_b64: str) -> bool:
    """True when ``signature_b64`` is a valid Ed25519 signature of ``message``; never raises on bad input."""
    try:
        public_key = public_key_from_b64(public_key_b64)
        signature = _b64decode_strict(signature_b64, "signature")
        if len(signature) != _SIGNATURE_BYTES or not isinstance(message, bytes | bytearray):
            return False
        public_key.verify(signature, bytes(message))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class OrgIdentity:
    """An organisation's name and Ed25519 key pair, able to sign."""

    org: str
    private_key: Ed25519PrivateKey = field(repr=False)
    public_key_b64: str
    key_id: str

    @classmethod
    def from_private_key(cls, org: str, private_key: Ed25519PrivateKey) -> OrgIdentity:
        """Build an identity from a key object (derives the public key and its id)."""
        public_b64 = base64.b64encode(_raw_public_key(private_key.public_key())).decode("ascii")
        return cls(org=org, private_key=private_key, public_key_b64=public_b64, key_id=key_id(public_b64))

    def sign(self, message: bytes) -> str:
        """Ed25519 signature of ``message``, base64-encoded."""
        return base64.b64encode(self.private_key.sign(message)).decode("ascii")


def _write_new_key(path: Path, org_name: str, exists_message: str) -> OrgIdentity:
    """A fresh key pair whose private key is written to ``path`` (created exclusively, mode 0600, fsynced);
    ``FileExistsError(exists_message)`` when the file is there already."""
    identity = OrgIdentity.from_private_key(org_name, Ed25519PrivateKey.generate())
    pem = identity.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FileExistsError(exists_message) from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    return identity


def generate_org_key(directory: Path, org_name: str) -> OrgIdentity:
    """Create a new key pair for ``org_name`` in ``directory`` (``org.key`` mode 0600, ``org.json``).

    Refuses to replace an existing private key (``FileExistsError``): losing it would lock the org out of the
    hub and orphan every signature it made. The key file is created exclusively, so two concurrent calls
    cannot both win.
    """
    if not isinstance(org_name, str) or not org_name.strip():
        raise ValueError("organisation name must be a non-empty string")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = directory / KEY_FILE
    identity = _write_new_key(key_path, org_name, (
        f"{key_path} already exists: refusing to overwrite an organisation key "
        "(move it away first if you really mean to replace it)"))
    public = {"org": identity.org, "public_key": identity.public_key_b64, "key_id": identity.key_id}
    (directory / IDENTITY_FILE).write_text(json.dumps(public, indent=2) + "\n", encoding="utf-8")
    return identity


def load_org_identity(directory: Path) -> OrgIdentity:
    """Load the identity written by :func:`generate_org_key`.

    ``FileNotFoundError`` when either file is missing; ``ValueError`` when they are unreadable or when
    ``org.json`` does not describe the private key in ``org.key``.
    """
    directory = Path(directory)
    key_path, info_path = directory / KEY_FILE, directory / IDENTITY_FILE
    for path in (key_path, info_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"no organisation identity in {directory}: {path.name} is missing "
                "(create one with `consortium org init`)"
            )
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        org = info["org"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{info_path} is not a valid identity file: {exc}") from None
    try:
        private_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{key_path} is not an unencrypted PKCS8 PEM private key: {exc}") from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise ValueError(f"{key_path} holds a {type(private_key).__name__}, expected an Ed25519 key")
    if not isinstance(org, str) or not org:
        raise ValueError(f"{info_path}: 'org' must be a non-empty string")
    identity = OrgIdentity.from_private_key(org, private_key)
    if info.get("public_key") != identity.public_key_b64:
        raise ValueError(f"{info_path} names a different public key than the private key in {key_path}")
    return identity


NEW_KEY_FILE = "org.key.new"
OLD_KEY_FILE = "org.key.old"


def stage_new_key(directory: Path, org_name: str) -> OrgIdentity:
    """A fresh key pair for a rotation, written to ``org.key.new`` (mode 0600, created exclusively) so that it
    is not lost should the process die after the hub accepted it. ``FileExistsError`` when an earlier rotation
    left one (it may be the key the hub now holds: look at ``consortium org keys`` before removing it)."""
    path = Path(directory) / NEW_KEY_FILE
    return _write_new_key(path, org_name, (
        f"{path} exists: an earlier key rotation did not finish. If the hub lists its key id as the org's "
        "current key, adopt it by hand (move it to org.key and update org.json); else remove it"))


def adopt_new_key(directory: Path, new: OrgIdentity) -> None:
    """Make the staged key (:func:`stage_new_key`) the org's key once the hub accepted the rotation: the old
    private key is kept as ``org.key.old``, ``org.key.new`` replaces ``org.key`` in one rename, then
    ``org.json`` names the new public key."""
    directory = Path(directory)
    write_bytes_atomic(directory / OLD_KEY_FILE, (directory / KEY_FILE).read_bytes())
    os.replace(directory / NEW_KEY_FILE, directory / KEY_FILE)
    write_json_atomic(directory / IDENTITY_FILE,
                      {"org": new.org, "public_key": new.public_key_b64, "key_id": new.key_id})


def discard_new_key(directory: Path) -> None:
    """Remove a staged key the hub refused."""
    (Path(directory) / NEW_KEY_FILE).unlink(missing_ok=True)


class OrgKeyFile:
    """The org identity in a directory, reloaded when its files change (a key rotation by another process), so
    that a running node signs with the new key from its next request. While the two files disagree (mid
    rotation) the identity loaded last is kept."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._stamp: tuple[int, ...] | None = None
        self._identity = load_org_identity(self.directory)
        self._stamp = self._files_stamp()

    def _files_stamp(self) -> tuple[int, ...] | None:
        try:
            stats = [os.stat(self.directory / name) for name in (KEY_FILE, IDENTITY_FILE)]
        except OSError:
            return None
        return tuple(value for st in stats for value in (st.st_ino, st.st_mtime_ns, st.st_size))

    def identity(self) -> OrgIdentity:
        """The current identity (one ``stat`` per file when nothing changed)."""
        stamp = self._files_stamp()
        if stamp is not None and stamp != self._stamp:
            try:
                self._identity = load_org_identity(self.directory)
            except (FileNotFoundError, ValueError):
                return self._identity
            self._stamp = stamp
        return self._identity


# ---------------------------------------------------------------------------------------------- requests


class SignatureError(Exception):
    """A signed request was rejected; ``reason`` says why in words fit for the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def canonical_request(method: str, path_with_query: str, body: bytes, timestamp: int, nonce: str) -> bytes:
    """The bytes a request signature covers: method, path and query, body hash, timestamp and nonce."""
    text = f"{method.upper()}\n{path_with_query}\n{sha256_hex(body)}\n{int(timestamp)}\n{nonce}"
    return text.encode("utf-8")


def sign_request(
    identity: OrgIdentity, method: str, path_with_query: str, body: bytes, now: float
) -> dict[str, str]:
    """The four ``X-Consortium-*`` headers that authenticate one request made at unix time ``now``."""
    timestamp = int(now)
    nonce = secrets.token_hex(16)
    signature = identity.sign(canonical_request(method, path_with_query, body, timestamp, nonce))
    return {
        HEADER_KEY: identity.key_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: signature,
    }


def _signature_header_values(headers: Mapping[str, str]) -> dict[str, str]:
    """The four signature headers' values, names matched case-insensitively; :class:`SignatureError` naming
    those missing or empty. Looked up by name first (a server's header mapping is case-insensitive already,
    and reading every header of every request costs the hub more than the signature check), the whole
    mapping lowered only when that misses."""
    values = {name: headers.get(name) or headers.get(name.lower()) for name in SIGNATURE_HEADERS}
    if all(values.values()):
        return values  # type: ignore[return-value]
    lowered = {str(name).lower(): value for name, value in headers.items()}
    values = {name: lowered.get(name.lower()) for name in SIGNATURE_HEADERS}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise SignatureError(f"missing signature header(s): {', '.join(missing)}")
    return values  # type: ignore[return-value]


def _checked_headers(headers: Mapping[str, str], now: float, max_skew: float) -> tuple[str, int, str, str]:
    """Key id, timestamp, nonce and signature of well-formed signature headers whose timestamp is within
    ``max_skew`` seconds of ``now``; :class:`SignatureError` otherwise."""
    values = _signature_header_values(headers)

    kid, raw_timestamp = values[HEADER_KEY], values[HEADER_TIMESTAMP]
    nonce, signature = values[HEADER_NONCE], values[HEADER_SIGNATURE]
    if not _TIMESTAMP_RE.fullmatch(raw_timestamp):
        raise SignatureError(f"malformed timestamp {raw_timestamp[:32]!r}: expected integer unix seconds")
    if not _NONCE_RE.fullmatch(nonce):
        raise SignatureError("malformed nonce: expected 32 lower-case hex characters")
    timestamp = int(raw_timestamp)
    skew = abs(now - timestamp)
    if skew > max_skew:
        raise SignatureError(
            f"timestamp is {skew:.0f} s away from the hub clock (limit {max_skew:g} s)"
        )
    return kid, timestamp, nonce, signature


def _known_key(kid: str, lookup_key: Callable[[str], str | None]) -> str:
    public_key = lookup_key(kid)
    if public_key is None:
        raise SignatureError(f"unknown or revoked key id {kid[:32]!r}")
    return public_key


def precheck_request(
    headers: Mapping[str, str],
    now: float,
    lookup_key: Callable[[str], str | None],
    max_skew: float = MAX_CLOCK_SKEW_S,
) -> str:
    """The checks of :func:`verify_request` that need no body (headers well formed, timestamp in the window,
    key known); returns the key id or raises :class:`SignatureError`. The hub runs them before it reads a
    request's body."""
    kid = _checked_headers(headers, now, max_skew)[0]
    _known_key(kid, lookup_key)
    return kid


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
    """Authenticate a signed request and return its key id, or raise :class:`SignatureError`.

    Checks, in order: the four headers are present and well formed; the timestamp is within ``max_skew``
    seconds of ``now``; ``lookup_key`` knows the key id (it returns ``None`` for unknown or revoked keys); the
    signature is valid over :func:`canonical_request`; and finally ``seen_nonce`` (which records the nonce and
    says whether it had been used before) accepts it. The replay check comes last so that unauthenticated
    requests cannot use up nonces. Header names are matched case-insensitively.
    """
    kid, timestamp, nonce, signature = _checked_headers(headers, now, max_skew)
    public_key = _known_key(kid, lookup_key)
    message = canonical_request(method, path_with_query, body, timestamp, nonce)
    if not verify_signature(public_key, message, signature):
        raise SignatureError(
            "bad signature: it does not match the key, method, path, body, timestamp and nonce"
        )
    if seen_nonce(kid, nonce):
        raise SignatureError("nonce already used (replayed request)")
    return kid


class SignedAuth(httpx.Auth):
    """httpx authentication that signs every request with the org key: ``httpx.Client(auth=SignedAuth(id))``.

    Each attempt (including redirects and retries) is signed afresh with a new nonce. ``clock`` is injectable
    for tests.
    """

    requires_request_body = True

    def __init__(self, identity: OrgIdentity | Callable[[], OrgIdentity],
                 clock: Callable[[], float] = time.time) -> None:
        self.identity = identity if callable(identity) else (lambda: identity)
        self.clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the ``X-Consortium-*`` headers to ``request`` and send it."""
        path = request.url.raw_path.decode("latin-1")
        headers = sign_request(self.identity(), request.method, path, request.content, self.clock())
        request.headers.update(headers)
        yield request


# ---------------------------------------------------------------------------------------------- tokens


def new_api_token() -> str:
    """A fresh user API token: ``csm_`` plus 43 URL-safe characters (256 random bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The at-rest form of an API or enrolment token: SHA-256 hex.

    A fast hash is the right tool here, unlike for passwords: tokens carry 256 random bits, so there is no
    dictionary to try and brute force is out of reach however cheap each guess is; a slow KDF would only add
    latency to every authenticated request. A stolen hash table still does not reveal usable tokens.
    """
    return sha256_hex(token.encode("utf-8"))


def constant_time_equal(a: str | bytes, b: str | bytes) -> bool:
    """Compare two secrets (or their hashes) without leaking where they first differ."""
    left = a.encode("utf-8") if isinstance(a, str) else a
    right = b.encode("utf-8") if isinstance(b, str) else b
    return hmac.compare_digest(left, right)


HUB_ID_RE = re.compile(r"[0-9a-f]{32}", re.ASCII)
"""A hub's id: 16 random bytes as lower-case hex (what signed votes and outcomes name)."""
