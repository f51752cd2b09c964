"""Bad wire input and unauthenticated load against a real hub process, on SQLite and PostgreSQL.

Every case here used to be a 500, or made the hub read (and hold) a body before refusing it: each must now get
a clear 4xx that renders, store nothing, and cost the hub no memory.
"""

from __future__ import annotations

import json
import uuid
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_api import ledger_size, raw_signed

from consortium import crypto
from consortium.launch import HubProcess, start_hub
from consortium.codec import encode_tensors, encode_update
from consortium.protocol import EnrolRequest, UpdateMeta
from consortium.scenario import ORGS, DigitsConsortium, approve_as, digits_spec, provision_digits

pytestmark = pytest.mark.e2e

ORG = ORGS[0]
TOO_BIG = 2**63
JSON_HEADERS = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def env(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DigitsConsortium]:
    workdir = tmp_path_factory.mktemp("wire")
    hub = start_hub(workdir / "hub", db_url=module_db_url, max_upload_mb=1)
    try:
        yield provision_digits(hub, workdir, ORGS[:2])
    finally:
        hub.stop()


def admin(env: DigitsConsortium, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {env.hub.admin_token}", **kwargs.pop("headers", {})}
    return httpx.request(method, env.hub.url + path, headers=headers, trust_env=False, timeout=30, **kwargs)


def spec_json(name: str, orgs=ORGS[:1], **overrides) -> dict:
    return digits_spec(name, list(orgs), rounds=1, min_nodes=1, round_timeout=600, **overrides).model_dump(
        mode="json")


def assert_422(response: httpx.Response, *fragments: str) -> str:
    """A 422 whose body is JSON that names each fragment; returns its text."""
    assert response.status_code == 422, response.text
    text = json.dumps(response.json()["detail"])
    for fragment in fragments:
        assert fragment in text, text
    return text


def project_names(env: DigitsConsortium) -> set[str]:
    return {p["name"] for p in admin(env, "GET", "/api/projects").json()}


# ---------------------------------------------------------------------------------------------- JSON


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_constants_are_a_422_that_renders(env: DigitsConsortium, constant: str) -> None:
    before = ledger_size(env.hub)
    body = json.dumps(spec_json(f"nan-{constant.lower()}")).replace('"lr": 0.05', f'"lr": {constant}')
    assert_422(admin(env, "POST", "/api/projects", content=body, headers=JSON_HEADERS),
               constant, "not a JSON number")
    assert ledger_size(env.hub) == before


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_constants_in_a_signed_body_are_a_422(env: DigitsConsortium, constant: str) -> None:
    # A refusal's body is parsed by the route (a result's by the service, which rejects its task instead).
    body = f'{{"reason": "tired", "score": {constant}}}'.encode()
    response = raw_signed(env, ORG, "POST", "/api/node/tasks/1/refusal", body, headers=JSON_HEADERS)
    assert_422(response, constant)


@pytest.mark.parametrize("number", ["1e400", "-1e400"])
def test_numbers_beyond_float64_are_a_422(env: DigitsConsortium, number: str) -> None:
    body = json.dumps(spec_json("overflow")).replace('"lr": 0.05', f'"lr": {number}')
    assert_422(admin(env, "POST", "/api/projects", content=body, headers=JSON_HEADERS), "too large")
    assert "overflow" not in project_names(env)


@pytest.mark.parametrize(("body", "fragment"), [
    (b'{"name": "dup", "name": "dup2", "display_name": ""}', "twice"),
    (b'{"name": "nul", "display_name": "a\\u0000b"}', "NUL"),
    (b'{"name": "surrogate", "display_name": "\\ud800"}', "surrogate"),
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    (b'{"name": "bad-utf8", "display_name": "\xff"}', "UTF-8"),
])
def test_json_that_no_database_could_store_is_a_422(env: DigitsConsortium, body: bytes, fragment: str) -> None:
    assert_422(admin(env, "POST", "/api/orgs", content=body, headers=JSON_HEADERS), fragment)


def test_a_422_never_echoes_the_input(env: DigitsConsortium) -> None:
    secret = "csm_this-enrolment-token-must-not-come-back"
    response = httpx.post(env.hub.url + "/api/enrol", json={"org": "x", "token": secret, "public_key": 5},
                          trust_env=False)
    text = assert_422(response, "public_key")
    assert secret not in text and "input" not in response.json()["detail"][0]


# ---------------------------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("path", [
    f"/api/runs/{TOO_BIG}", f"/api/projects/{TOO_BIG}", f"/api/models/{TOO_BIG}/weights",
    f"/api/ledger?after={TOO_BIG}", f"/api/runs/1/progress?after_round={TOO_BIG}", "/api/runs/0",
    f"/api/projects/{2**31}", f"/api/runs/1/progress?after_round={2**31}",  # ids and rounds are 32-bit columns
])
def test_ids_and_positions_beyond_int64_are_a_422(env: DigitsConsortium, path: str) -> None:
    assert_422(admin(env, "GET", path), "Input should be")


def test_a_task_id_beyond_int64_is_a_422_for_a_node(env: DigitsConsortium) -> None:
    assert_422(raw_signed(env, ORG, "GET", f"/api/node/tasks/{TOO_BIG}/params"), "task_id")


def test_a_name_that_is_not_a_name_is_a_422(env: DigitsConsortium) -> None:
    assert_422(admin(env, "POST", "/api/orgs/a%00b/enrolment-tokens"), "name")


def test_absurd_layer_widths_are_refused_at_proposal(env: DigitsConsortium) -> None:
    before = ledger_size(env.hub)
    spec = spec_json("wide")
    spec["algorithm"]["hyperparameters"]["layers"] = [64, 2**40, 10]
    assert_422(admin(env, "POST", "/api/projects", json=spec), "layers")
    spec["algorithm"]["hyperparameters"]["layers"] = [64, 2**20, 2**20, 10]
    assert_422(admin(env, "POST", "/api/projects", json=spec), "layers", "parameters")
    assert ledger_size(env.hub) == before and "wide" not in project_names(env)


@pytest.mark.parametrize(("field", "value"), [("batch_size", 2**40), ("local_epochs", 10**9), ("lr", float("inf"))])
def test_absurd_or_infinite_hyperparameters_are_refused(env: DigitsConsortium, field: str, value: float) -> None:
    spec = spec_json("absurd")
    spec["algorithm"]["hyperparameters"][field] = value
    body = json.dumps(spec)  # an infinite lr goes out as Infinity, which the strict parser refuses
    response = admin(env, "POST", "/api/projects", content=body, headers=JSON_HEADERS)
    assert_422(response, "Infinity" if value == float("inf") else field)
    assert "absurd" not in project_names(env)


def test_absurd_row_count_is_refused(env: DigitsConsortium) -> None:
    card = next(c for c in admin(env, "GET", "/api/datasets").json() if c["org"] == ORG)
    card = {k: v for k, v in card.items() if k not in ("id", "org", "created_at")}
    card |= {"name": "huge", "rows": 2**70}
    response = raw_signed(env, ORG, "POST", "/api/datasets", json.dumps(card).encode(), headers=JSON_HEADERS)
    assert_422(response, "rows")
    assert all(c["name"] != "huge" for c in admin(env, "GET", "/api/datasets").json())


# ---------------------------------------------------------------------------------------------- safetensors


def header_payload(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


BAD_HEADERS = {
    "array": header_payload(b"[]"),
    "string": header_payload(b'"x"'),
    "deep": header_payload(b"[" * 100_000 + b"]" * 100_000),
    "nan-metadata": header_payload(b'{"__metadata__": {"a": NaN}}'),
    "metadata-not-strings": header_payload(b'{"__metadata__": {"update": {"a": 1}}}'),
    "offsets-outside": header_payload(b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'),
    "length-beyond": struct.pack("<Q", 2**60) + b"{}",
}


@pytest.fixture(scope="module")
def project(env: DigitsConsortium) -> dict:
    response = admin(env, "POST", "/api/projects", json=spec_json("test-sets"))
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.parametrize("name", sorted(BAD_HEADERS))
def test_malformed_test_set_headers_are_refused(env: DigitsConsortium, project: dict, name: str) -> None:
    response = admin(env, "PUT", f"/api/projects/{project['id']}/test-set", content=BAD_HEADERS[name])
    assert response.status_code == 422, response.text
    assert "safetensors" in response.json()["detail"]
    assert admin(env, "GET", f"/api/projects/{project['id']}").json()["has_test_set"] is False


@pytest.fixture
def open_task(env: DigitsConsortium) -> dict:
    """A running one-org project whose round-1 fit task the test claims as the node would (one per test: a
    refused upload closes its task as rejected)."""
    response = admin(env, "POST", "/api/projects", json=spec_json(f"bad-headers-{uuid.uuid4().hex[:8]}"))
    assert response.status_code == 201, response.text
    project = response.json()
    approve_as(env.org_dirs[ORG], env.hub.url, project)
    assert admin(env, "POST", f"/api/projects/{project['id']}/runs").status_code == 201
    with env.org_client(ORG) as node:
        delivery = node.next_task(wait=30)
    assert delivery is not None
    return {"task": delivery[0], "params": delivery[1]}


@pytest.mark.parametrize("name", sorted(BAD_HEADERS))
def test_malformed_update_headers_are_refused(env: DigitsConsortium, open_task: dict, name: str) -> None:
    path = f"/api/node/tasks/{open_task['task'].id}/update"
    response = raw_signed(env, ORG, "POST", path, BAD_HEADERS[name])
    assert response.status_code == 422, response.text
    assert "safetensors" in response.json()["detail"]


def test_update_metadata_with_nan_is_refused(env: DigitsConsortium, open_task: dict) -> None:
    meta = UpdateMeta(num_examples=1, compute_s=0).model_dump_json().replace('"metrics":{}', '"metrics":{"a":NaN}')
    payload = encode_tensors(open_task["params"], {"update": meta})
    response = raw_signed(env, ORG, "POST", f"/api/node/tasks/{open_task['task'].id}/update", payload)
    assert response.status_code == 422, response.text
    assert "NaN" in response.json()["detail"]


def test_the_task_still_takes_a_good_update(env: DigitsConsortium, open_task: dict) -> None:
    tensors = {k: v + 0.01 for k, v in open_task["params"].items()}
    payload = encode_update(tensors, UpdateMeta(num_examples=10, compute_s=0.01))
    response = raw_signed(env, ORG, "POST", f"/api/node/tasks/{open_task['task'].id}/update", payload)
    assert response.status_code == 202, response.text


# ---------------------------------------------------------------------------------------------- body before auth

BIG = 50 * 1024 * 1024


def hub_rss_mb(hub: HubProcess) -> float:
    for line in Path(f"/proc/{hub.popen.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def push_body(hub: HubProcess, path: str, headers: dict[str, str] | None = None) -> tuple[bytes, int]:
    """Announce a 50 MB body, read the answer before sending any of it, then send as much as the hub takes;
    returns the answer's head and the bytes the hub took before it closed the connection."""
    lines = [f"POST {path} HTTP/1.1", "Host: hub", "Content-Type: application/json", f"Content-Length: {BIG}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = sock.recv(65536)
        sent, chunk = 0, b"\0" * 65536
        try:
            while sent < BIG:
                sent += sock.send(chunk)
        except OSError:
            pass
    return answer, sent


@pytest.mark.parametrize(("path", "headers", "status"), [
    ("/api/node/tasks/1/update", {}, 401),
    ("/api/projects/1/test-set", {"Authorization": "Bearer csm_not-a-token"}, 401),
    ("/api/projects", {}, 401),
    ("/api/enrol", {}, 413),
])
def test_a_big_body_is_refused_before_it_is_read(
    env: DigitsConsortium, path: str, headers: dict[str, str], status: int
) -> None:
    answer, sent = push_body(env.hub, path, headers)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert b"connection: close" in answer.lower()
    assert sent < BIG // 4, f"the hub took {sent} bytes of a body it had refused"


def test_unauthenticated_uploads_cost_the_hub_no_memory(env: DigitsConsortium, tmp_path: Path) -> None:
    stranger = crypto.generate_org_key(tmp_path / "stranger", "stranger")
    signed = crypto.sign_request(stranger, "POST", "/api/node/tasks/1/update", b"", now=time.time())
    before = hub_rss_mb(env.hub)
    answers: list[bytes] = []
    threads = [threading.Thread(target=lambda h=h: answers.append(push_body(env.hub, "/api/node/tasks/1/update",
                                                                             h)[0]))
               for h in ({}, signed, {}, signed)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 4 and all(a.startswith(b"HTTP/1.1 401 ") for a in answers), answers
    assert hub_rss_mb(env.hub) - before < 20


def test_an_authenticated_json_body_over_its_limit_is_413(env: DigitsConsortium) -> None:
    response = admin(env, "POST", "/api/orgs", content=b" " * (1024 * 1024 + 1), headers=JSON_HEADERS)
    assert response.status_code == 413
    assert "exceeds the hub's limit" in response.json()["detail"]


def test_a_streamed_body_over_its_limit_is_413(env: DigitsConsortium) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 32768

    response = admin(env, "POST", "/api/orgs", content=chunks(), headers=JSON_HEADERS)
    assert response.status_code == 413, response.text
    assert "exceeds the hub's limit" in response.json()["detail"]


# ---------------------------------------------------------------------------------------------- rate limits

LIMIT, WINDOW_S = 3, 4.0


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DigitsConsortium]:
    """A hub (on SQLite: the limits live in its memory) with a small limit and a short window."""
    workdir = tmp_path_factory.mktemp("limited")
    hub = start_hub(workdir / "hub", auth_failure_limit=LIMIT, auth_failure_window_s=WINDOW_S)
    try:
        yield provision_digits(hub, workdir, ORGS[:1])
    finally:
        hub.stop()


def get_me(env: DigitsConsortium, token: str) -> httpx.Response:
    return httpx.get(env.hub.url + "/api/me", headers={"Authorization": f"Bearer {token}"}, trust_env=False)


def assert_429(response: httpx.Response, what: str) -> float:
    assert response.status_code == 429, response.text
    assert what in response.json()["detail"]
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= WINDOW_S + 1
    return retry_after


def test_failed_tokens_are_limited_and_the_limit_passes(limited: DigitsConsortium) -> None:
    for _ in range(LIMIT):
        assert get_me(limited, "csm_wrong").status_code == 401
    wait = assert_429(get_me(limited, "csm_wrong"), "too many failed token authentications")
    assert_429(get_me(limited, limited.hub.admin_token), "token")  # the address is blocked, not the token
    assert raw_signed(limited, ORG, "GET", "/api/me").status_code == 200  # signatures count apart
    time.sleep(wait + 0.1)
    assert get_me(limited, limited.hub.admin_token).status_code == 200


def test_failed_signatures_are_limited_and_the_limit_passes(limited: DigitsConsortium) -> None:
    for i in range(LIMIT):
        if i % 2:  # refused by the gate, before the body
            response = raw_signed(limited, ORG, "GET", "/api/me", now=time.time() - 400)
        else:  # passes the gate; the signature over the body does not verify
            response = raw_signed(limited, ORG, "GET", "/api/me", headers={"X-Consortium-Signature": "AAAA"})
        assert response.status_code == 401, response.text
    wait = assert_429(raw_signed(limited, ORG, "GET", "/api/me"), "too many failed signature verifications")
    time.sleep(wait + 0.1)
    assert raw_signed(limited, ORG, "GET", "/api/me").status_code == 200


def test_failed_enrolments_are_limited_and_the_limit_passes(limited: DigitsConsortium, tmp_path: Path) -> None:
    with limited.hub.client() as client:
        client.create_org("late-org")
        token = client.enrolment_token("late-org")
    identity = crypto.generate_org_key(tmp_path / "late-org", "late-org")
    good = EnrolRequest(org="late-org", token=token, public_key=identity.public_key_b64).model_dump()

    def enrol(body: dict) -> httpx.Response:
        return httpx.post(limited.hub.url + "/api/enrol", json=body, trust_env=False)

    for _ in range(LIMIT):
        assert enrol(good | {"token": "csm_" + "x" * 40}).status_code == 401
    wait = assert_429(enrol(good), "too many failed enrolments")
    time.sleep(wait + 0.1)
    assert enrol(good).status_code == 201


def test_the_default_limit_leaves_room_for_honest_mistakes(env: DigitsConsortium) -> None:
    """The module's hub runs with the defaults: a few failures do not lock anyone out."""
    for _ in range(5):
        assert get_me(env, "csm_wrong").status_code == 401
    assert get_me(env, env.hub.admin_token).status_code == 200
