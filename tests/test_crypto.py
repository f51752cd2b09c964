"""Org keys, request signatures (every rejection reason), tokens and canonical hashing."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium import crypto
from consortium.crypto import (
    HEADER_KEY,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    SIGNATURE_HEADERS,
    OrgIdentity,
    SignatureError,
    SignedAuth,
)

NOW = 1_750_000_000.0
PATH = "/api/node/tasks/7/result?round=3"
BODY = b'{"loss": 0.25}'


@pytest.fixture(scope="module")
def identity() -> OrgIdentity:
    return OrgIdentity.from_private_key("north-clinic", Ed25519PrivateKey.generate())


class Hub:
    """A minimal hub side: a key registry and a nonce store."""

    def __init__(self, *identities: OrgIdentity) -> None:
        self.keys = {i.key_id: i.public_key_b64 for i in identities}
        self.nonces: set[tuple[str, str]] = set()

    def seen_nonce(self, kid: str, nonce: str) -> bool:
        if (kid, nonce) in self.nonces:
            return True
        self.nonces.add((kid, nonce))
        return False

    def verify(self, headers, method: str = "POST", path: str = PATH, body: bytes = BODY,
               now: float = NOW) -> str:
        return crypto.verify_request(headers, method, path, body, now=now, lookup_key=self.keys.get,
                                     seen_nonce=self.seen_nonce)


def rejection(fn: Callable[[], object]) -> str:
    with pytest.raises(SignatureError) as info:
        fn()
    assert str(info.value) == info.value.reason
    return info.value.reason


# ------------------------------------------------------------------------------------------ key files


def test_generate_and_load_round_trip(tmp_path: Path) -> None:
    made = crypto.generate_org_key(tmp_path / "keys" / "north", "north")
    loaded = crypto.load_org_identity(tmp_path / "keys" / "north")
    assert loaded.org == "north"
    assert loaded.public_key_b64 == made.public_key_b64
    assert loaded.key_id == made.key_id == crypto.key_id(made.public_key_b64)
    assert len(base64.b64decode(made.public_key_b64)) == 32
    info = json.loads((tmp_path / "keys" / "north" / "org.json").read_text())
    assert info == {"org": "north", "public_key": made.public_key_b64, "key_id": made.key_id}
    assert crypto.verify_signature(made.public_key_b64, b"hello", loaded.sign(b"hello"))
    assert "PRIVATE" not in repr(made)


def test_private_key_file_is_pkcs8_pem_mode_0600(tmp_path: Path) -> None:
    crypto.generate_org_key(tmp_path, "north")
    key_file = tmp_path / "org.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_generate_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    first = crypto.generate_org_key(tmp_path, "north")
    before = (tmp_path / "org.key").read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        crypto.generate_org_key(tmp_path, "north")
    assert (tmp_path / "org.key").read_bytes() == before
    assert crypto.load_org_identity(tmp_path).key_id == first.key_id


@pytest.mark.parametrize("missing", ["org.key", "org.json"])
def test_load_names_the_missing_file(tmp_path: Path, missing: str) -> None:
    crypto.generate_org_key(tmp_path, "north")
    (tmp_path / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        crypto.load_org_identity(tmp_path)


def test_load_rejects_a_mismatched_public_key(tmp_path: Path) -> None:
    crypto.generate_org_key(tmp_path / "a", "a")
    other = crypto.generate_org_key(tmp_path / "b", "b")
    info = json.loads((tmp_path / "a" / "org.json").read_text())
    info["public_key"] = other.public_key_b64
    (tmp_path / "a" / "org.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="different public key"):
        crypto.load_org_identity(tmp_path / "a")


# ------------------------------------------------------------------------------------------ keys, signatures


def test_key_id_is_sha256_prefix_of_raw_key(identity: OrgIdentity) -> None:
    raw = base64.b64decode(identity.public_key_b64)
    assert identity.key_id == crypto.sha256_hex(raw)[:16]
    assert len(identity.key_id) == 16


@pytest.mark.parametrize(
    "bad",
    ["", "not base64!", base64.b64encode(b"x" * 31).decode(), base64.b64encode(b"x" * 33).decode(), "é"],
)
def test_public_key_from_b64_rejects_bad_input(bad: str) -> None:
    with pytest.raises(ValueError):
        crypto.public_key_from_b64(bad)


def test_sign_verify_round_trip(identity: OrgIdentity) -> None:
    signature = identity.sign(b"message")
    assert crypto.verify_signature(identity.public_key_b64, b"message", signature)
    assert not crypto.verify_signature(identity.public_key_b64, b"messagf", signature)
    other = OrgIdentity.from_private_key("other", Ed25519PrivateKey.generate())
    assert not crypto.verify_signature(other.public_key_b64, b"message", signature)


@pytest.mark.parametrize(
    ("key", "signature"),
    [("garbage", None), (None, "garbage"), (None, ""), (None, base64.b64encode(b"\0" * 63).decode()),
     (None, 12345), (b"\xff", None)],
)
def test_verify_signature_never_raises(identity: OrgIdentity, key, signature) -> None:
    assert not crypto.verify_signature(
        identity.public_key_b64 if key is None else key,
        b"message",
        identity.sign(b"message") if signature is None else signature,
    )


# ------------------------------------------------------------------------------------------ signed requests


def test_signed_request_verifies(identity: OrgIdentity) -> None:
    headers = crypto.sign_request(identity, "POST", PATH, BODY, now=NOW)
    assert set(headers) == set(SIGNATURE_HEADERS)
    assert headers[HEADER_TIMESTAMP] == str(int(NOW))
    assert len(headers[HEADER_NONCE]) == 32 and int(headers[HEADER_NONCE], 16) >= 0
    assert Hub(identity).verify(headers) == identity.key_id


def test_canonical_request_layout() -> None:
    message = crypto.canonical_request("post", "/a?b=1", b"xyz", 1700000000, "ab" * 16)
    assert message == f"POST\n/a?b=1\n{crypto.sha256_hex(b'xyz')}\n1700000000\n{'ab' * 16}".encode()


def test_header_names_are_case_insensitive(identity: OrgIdentity) -> None:
    headers = {k.lower(): v for k, v in crypto.sign_request(identity, "POST", PATH, BODY, now=NOW).items()}
    assert Hub(identity).verify(headers) == identity.key_id
    headers = {k.upper(): v for k, v in crypto.sign_request(identity, "POST", PATH, BODY, now=NOW).items()}
    assert Hub(identity).verify(httpx.Headers(headers)) == identity.key_id


@pytest.mark.parametrize("header", SIGNATURE_HEADERS)
def test_missing_header_is_named(identity: OrgIdentity, header: str) -> None:
    headers = crypto.sign_request(identity, "POST", PATH, BODY, now=NOW)
    del headers[header]
    reason = rejection(lambda: Hub(identity).verify(headers))
    assert "missing" in reason and header in reason
    assert all(other not in reason for other in SIGNATURE_HEADERS if other != header)


def test_all_missing_headers_are_named(identity: OrgIdentity) -> None:
    reason = rejection(lambda: Hub(identity).verify({"Content-Type": "application/json"}))
    assert all(header in reason for header in SIGNATURE_HEADERS)


@pytest.mark.parametrize("value", ["soon", "1.5e9", "-5", " 1750000000", "１７５", "9" * 40])
def test_malformed_timestamp(identity: OrgIdentity, value: str) -> None:
    headers = crypto.sign_request(identity, "POST", PATH, BODY, now=NOW)
    headers[HEADER_TIMESTAMP] = value
    assert "malformed timestamp" in rejection(lambda: Hub(identity).verify(headers))


def test_malformed_nonce(identity: OrgIdentity) -> None:
    headers = crypto.sign_request(identity, "POST", PATH, BODY, now=NOW)
    headers[HEADER_NONCE] = "x" * 5000
    assert "malformed nonce" in rejection(lambda: Hub(identity).verify(headers))


@pytest.mark.parametrize("offset", [-400.0, 400.0, -301.0, 301.0])
def test_timestamp_out_of_window_both_directions(identity: OrgIdentity, offset: float) -> None:
    headers = crypto.sign_request(identity, "POST", PATH, BODY, now=NOW + offset)
    hub = Hub(identity)
    reason = rejection(lambda: hub.verify(headers))
    assert reason == f"timestamp is {abs(offset):.0f} s away from the hub clock (limit 300 s)"
    assert not hub.nonces


@pytest.mark.parametrize("offset", [-300.0, 300.0, 0.0])
def test_timestamp_at_the_window_edge_is_accepted(identity: OrgIdentity, offset: float) -> None:
    headers = crypto.sign_request(identity, "POST", PATH, BODY, now=NOW + offset)
    assert Hub(identity).verify(headers) == identity.key_id


def test_unknown_key(identity: OrgIdentity) -> None:
    headers = crypto.sign_request(identity, "POST", PATH, BODY, now=NOW)
    hub = Hub()
    reason = rejection(lambda: hub.verify(headers))
    assert "unknown" in reason and identity.key_id in reason
    assert not hub.nonces


def test_signature_by_another_key_under_a_known_key_id(identity: OrgIdentity) -> None:
    impostor = OrgIdentity.from_private_key("impostor", Ed25519PrivateKey.generate())
    headers = crypto.sign_request(impostor, "POST", PATH, BODY, now=NOW)
    headers[HEADER_KEY] = identity.key_id
    assert "bad signature" in rejection(lambda: Hub(identity, impostor).verify(headers))


@pytest.mark.parametrize(
    "tamper",
    [
        {"body": b'{"loss": 0.26}'},
        {"body": b""},
        {"path": "/api/node/tasks/8/result?round=3"},
        {"path": "/api/node/tasks/7/result?round=4"},
        {"path": "/api/node/tasks/7/result"},
        {"method": "PUT"},
        {"method": "GET"},
    ],
    ids=lambda t: next(iter(t.items()))[0] + "=" + repr(next(iter(t.values()))),
)
def test_tampered_request_is_a_bad_signature(identity: OrgIdentity, tamper: dict) -> None:
    headers = crypto.sign_request(identity, "POST", PATH, BODY, now=NOW)
    hub = Hub(identity)
    reason = rejection(lambda: hub.verify(headers, **tamper))
    assert reason.startswith("bad signature")
    assert not hub.nonces, "a request that failed authentication must not burn its nonce"
    assert hub.verify(headers) == identity.key_id


@pytest.mark.parametrize("header", [HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE])
def test_tampered_header_is_a_bad_signature(identity: OrgIdentity, header: str) -> None:
    headers = crypto.sign_request(identity, "POST", PATH, BODY, now=NOW)
    original = headers[header]
    if header == HEADER_TIMESTAMP:
        headers[header] = str(int(original) + 1)
    elif header == HEADER_NONCE:
        headers[header] = ("0" if original[0] != "0" else "1") + original[1:]
    else:
        raw = bytearray(base64.b64decode(original))
        raw[0] ^= 1
        headers[header] = base64.b64encode(bytes(raw)).decode()
    assert rejection(lambda: Hub(identity).verify(headers)).startswith("bad signature")


def test_replayed_nonce(identity: OrgIdentity) -> None:
    headers = crypto.sign_request(identity, "POST", PATH, BODY, now=NOW)
    hub = Hub(identity)
    assert hub.verify(headers) == identity.key_id
    assert rejection(lambda: hub.verify(headers, now=NOW + 5)) == "nonce already used (replayed request)"


def test_each_signing_uses_a_fresh_nonce(identity: OrgIdentity) -> None:
    hub = Hub(identity)
    for _ in range(5):
        assert hub.verify(crypto.sign_request(identity, "POST", PATH, BODY, now=NOW)) == identity.key_id
    assert len(hub.nonces) == 5


@settings(max_examples=200, deadline=None)
@given(body=st.binary(min_size=1, max_size=512), data=st.data())
def test_any_single_byte_change_to_the_body_fails(identity: OrgIdentity, body: bytes, data) -> None:
    headers = crypto.sign_request(identity, "POST", PATH, body, now=NOW)
    index = data.draw(st.integers(0, len(body) - 1), label="index")
    new_byte = data.draw(st.integers(0, 255).filter(lambda b: b != body[index]), label="new byte")
    tampered = body[:index] + bytes([new_byte]) + body[index + 1:]
    hub = Hub(identity)
    with pytest.raises(SignatureError, match="bad signature"):
        hub.verify(headers, body=tampered)
    assert hub.verify(headers, body=body) == identity.key_id


# ------------------------------------------------------------------------------------------ httpx auth


def test_signed_auth_headers_verify(identity: OrgIdentity) -> None:
    auth = SignedAuth(identity, clock=lambda: NOW)
    url = "https://hub.example/api/node/tasks/7/result?round=3&x=a%20b"
    request = httpx.Request("POST", url, content=BODY)
    signed = next(auth.sync_auth_flow(request))
    assert request.url.raw_path == b"/api/node/tasks/7/result?round=3&x=a%20b"
    kid = crypto.verify_request(
        signed.headers, "POST", "/api/node/tasks/7/result?round=3&x=a%20b", BODY, now=NOW,
        lookup_key=Hub(identity).keys.get, seen_nonce=lambda kid, nonce: False,
    )
    assert kid == identity.key_id


def test_signed_auth_through_a_client_reaches_a_verifying_server(identity: OrgIdentity) -> None:
    hub = Hub(identity)
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        try:
            kid = hub.verify(request.headers, request.method, request.url.raw_path.decode(), request.content,
                             now=NOW + 1)
        except SignatureError as exc:
            return httpx.Response(401, json={"detail": exc.reason})
        seen.append(kid)
        return httpx.Response(200, json={"ok": True})

    with httpx.Client(auth=SignedAuth(identity, clock=lambda: NOW), transport=httpx.MockTransport(handler),
                      base_url="http://hub") as client:
        assert client.post("/api/upload?round=2", content=b"\x00\x01weights").status_code == 200
        assert client.post("/api/upload", json={"a": [1, 2]}).status_code == 200
        assert client.get("/api/me", params={"q": "ü"}).status_code == 200
    assert seen == [identity.key_id] * 3


# ------------------------------------------------------------------------------------------ tokens, json


def test_api_tokens() -> None:
    token = crypto.new_api_token()
    assert token.startswith("csm_") and len(token) == 4 + 43
    assert set(token[4:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert crypto.new_api_token() != token
    digest = crypto.hash_token(token)
    assert len(digest) == 64 and digest == crypto.sha256_hex(token.encode())
    assert crypto.constant_time_equal(digest, crypto.hash_token(token))
    assert not crypto.constant_time_equal(digest, crypto.hash_token(token + "x"))
    assert crypto.constant_time_equal(b"abc", b"abc")
