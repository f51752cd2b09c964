"""The gate's pieces in-process: which routes are public or uploads, the token cache, the body-free precheck."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from consortium import crypto
from consortium.config import HubSettings
from consortium.hub.app import create_app
from consortium.hub.gate import PRINCIPAL_SCOPE_KEY, AuthFailures, Gate
from consortium.hub.limits import BODY_LIMIT_SCOPE_KEY
from consortium.hub.services.identity import Principal, TokenCache
from consortium.protocol import Role


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Gate:
    app = create_app(HubSettings.from_args(None, tmp_path_factory.mktemp("gate"), "csm_" + "a" * 40))
    found = next(m for m in app.user_middleware if m.cls is Gate)
    return Gate(None, **found.kwargs)


def scope(method: str, path: str) -> dict:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}


@pytest.mark.parametrize(("method", "path", "access"), [
    ("GET", "/api/health", "public"),
    ("GET", "/openapi.json", "public"),
    ("GET", "/docs", "public"),
    ("POST", "/api/enrol", "enrolment"),
    ("GET", "/api/enrol", "enrolment"),  # a 405 for the route, but the route's limit all the same
    ("POST", "/api/node/tasks/3/update", "upload"),
    ("POST", "/api/node/secagg/3/masked_input", "upload"),
    ("GET", "/api/node/secagg/3/keys", "authenticated"),
    ("PUT", "/api/projects/3/test-set", "upload"),
    ("POST", "/api/challenges/3/submissions", "upload"),
    ("POST", "/api/challenges/3/submissions/model", "authenticated"),
    ("POST", "/api/node/challenges/submissions/3/score", "authenticated"),
    ("POST", "/api/projects", "authenticated"),
    ("POST", "/api/projects/with-test-set", "upload"),
    ("POST", "/api/projects/3/withdraw", "authenticated"),
    ("GET", "/api/datasets/north/digits", "optional"),
    ("PATCH", "/api/datasets/north/digits", "authenticated"),
    ("PUT", "/api/datasets/north/digits/uploads/" + "a" * 64, "upload"),
    ("GET", "/api/datasets/north/digits/uploads/" + "a" * 64, "authenticated"),
    ("POST", "/api/datasets/north/digits/versions", "authenticated"),
    ("GET", "/api/datasets/north/digits/versions", "optional"),
    ("GET", "/api/datasets/north/digits/versions/1.0", "optional"),
    ("GET", "/api/datasets/north/digits/versions/1.0/file", "optional"),
    ("POST", "/api/datasets/north/digits/versions/1.0/withdraw", "authenticated"),
    ("POST", "/api/licences/accept", "authenticated"),
    ("GET", "/api/catalogue", "optional"),
    ("GET", "/api/models/3/weights", "optional"),
    ("GET", "/api/node/tasks/next", "authenticated"),
    ("GET", "/nowhere", "authenticated"),
    ("GET", "/", "web"),
    ("POST", "/login", "web"),
    ("GET", "/datasets/north/digits", "web"),
    ("GET", "/models/3/weights", "web"),
    ("GET", "/static/web.css", "public"),
    ("GET", "/static/ledger.js", "public"),
    ("GET", "/ledger/feed.json", "web"),
    ("POST", "/proposals/3/vote", "web"),
    ("GET", "/static/run.js", "public"),
    ("GET", "/runs/3/events", "web"),
    ("POST", "/projects/3/runs", "web"),
    ("GET", "/challenges/3", "web"),
])
def test_route_access(gate: Gate, method: str, path: str, access: str) -> None:
    assert gate.access(scope(method, path)) == access


def test_every_api_route_but_health_enrolment_and_public_reads_needs_credentials(gate: Gate) -> None:
    def marked(*kinds: str) -> set[tuple[str, str]]:
        return {(method, route.path) for route in gate.routes if isinstance(route, APIRoute)
                for method in route.methods if gate.access(scope(method, route.path)) in kinds}

    assert marked("public", "enrolment") == {("GET", "/api/health"), ("POST", "/api/enrol"),
                                             ("GET", "/static/web.css"), ("GET", "/static/{name}.js")}
    assert marked("optional") == {
        ("GET", path) for path in (
            "/api/datasets", "/api/datasets/{org}/{name}", "/api/datasets/{org}/{name}/croissant",
            "/api/environments", "/api/environments/{org}/{name}", "/api/models", "/api/models/{model_id}",
            "/api/models/{model_id}/weights", "/api/models/{model_id}/files/{name}",
            "/api/models/{model_id}/card.md", "/api/datasets/{org}/{name}/versions",
            "/api/datasets/{org}/{name}/versions/{version}", "/api/datasets/{org}/{name}/versions/{version}/file",
            "/api/catalogue")
    }


def test_web_pages_are_outside_the_api_and_its_description(gate: Gate) -> None:
    pages = [r for r in gate.routes if isinstance(r, APIRoute) and not r.path.startswith("/api/")]
    assert pages and all(not r.include_in_schema for r in pages)
    assert {gate.access(scope(m, r.path)) for r in pages for m in r.methods} == {"web", "public"}


def gate_answer(gate: Gate, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int | None, dict]:
    """Run ``gate`` on a GET of ``path``: the status it answered itself (None when it let the request
    through) and the scope the app got."""
    reached: dict = {}
    sent: list[dict] = []

    async def app(scope: dict, receive, send) -> None:
        reached.update(scope)

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    request = scope("GET", path) | {"headers": headers, "client": ("10.0.0.9", 1)}
    asyncio.run(Gate(app, routes=gate.routes, state=gate.state, settings=gate.settings,
                     failures=AuthFailures(100, 60.0), tokens=TokenCache())(request, receive, send))
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    return status, reached


def test_an_optional_route_lets_anonymous_callers_in_with_the_small_body_limit(gate: Gate) -> None:
    status, reached = gate_answer(gate, "/api/datasets", [])
    assert status is None
    assert reached[BODY_LIMIT_SCOPE_KEY] == gate.settings.max_public_bytes
    assert PRINCIPAL_SCOPE_KEY not in reached


def test_an_optional_route_authenticates_credentials_that_are_sent(gate: Gate) -> None:
    for headers in ([(b"authorization", b"Bearer csm_nonsense")], [(b"authorization", b"Basic eDp5")],
                    [(b"x-consortium-key", b"0" * 16)]):
        status, reached = gate_answer(gate, "/api/models/1/weights", headers)
        assert status == 401 and not reached, headers
    status, _ = gate_answer(gate, "/api/projects", [])
    assert status == 401, "an authenticated route still refuses anonymous callers"


def test_the_token_cache_keeps_valid_tokens_briefly() -> None:
    cache = TokenCache(ttl_s=5.0, max_entries=2)
    who = Principal("user", "ann", Role.researcher, None, None)
    assert cache.cached("t1", 0.0) is None
    cache.remember("t1", who, 0.0)
    assert cache.cached("t1", 4.9) == who
    assert cache.cached("t1", 5.0) is None
    cache.remember("t2", who, 0.0)
    cache.remember("t3", who, 0.0)  # full: starts afresh
    assert cache.cached("t2", 1.0) is None and cache.cached("t3", 1.0) == who


def test_the_precheck_needs_no_body(tmp_path: Path) -> None:
    identity = crypto.generate_org_key(tmp_path / "org", "org")
    now = time.time()
    headers = crypto.sign_request(identity, "POST", "/api/x", b"the body", now)
    known = {identity.key_id: identity.public_key_b64}
    assert crypto.precheck_request(headers, now, known.get) == identity.key_id
    for bad, reason in [
        (headers | {crypto.HEADER_TIMESTAMP: str(int(now) - 400)}, "timestamp"),
        (headers | {crypto.HEADER_KEY: "0" * 16}, "unknown or revoked key"),
        (headers | {crypto.HEADER_NONCE: "xyz"}, "malformed nonce"),
        ({crypto.HEADER_KEY: identity.key_id}, "missing signature header"),
    ]:
        with pytest.raises(crypto.SignatureError, match=reason):
            crypto.precheck_request(bad, now, known.get)


def test_a_revoked_token_or_a_deactivated_user_is_refused_at_once_despite_the_cache(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    admin = {"Authorization": "Bearer csm_" + "b" * 40}
    app = create_app(HubSettings.from_args(None, tmp_path / "hub", "csm_" + "b" * 40))
    with TestClient(app) as http:
        for name in ("rex", "ida"):
            created = http.post("/api/users", json={"name": name, "role": "researcher"}, headers=admin)
            assert created.status_code == 201
        issued = http.post("/api/users/rex/tokens", json={}, headers=admin).json()
        rex = {"Authorization": f"Bearer {issued['token']}"}
        ida = {"Authorization": f"Bearer {created.json()['token']}"}
        assert http.get("/api/me", headers=rex).status_code == 200  # now in the gate's cache
        assert http.get("/api/me", headers=ida).status_code == 200
        revoked = http.delete("/api/users/rex/tokens", headers=admin).json()
        assert len(revoked) == 2 and all(t["revoked_at"] for t in revoked)
        assert http.get("/api/me", headers=rex).status_code == 401
        assert http.patch("/api/users/ida", json={"active": False}, headers=admin).json()["active"] is False
        refused = http.get("/api/me", headers=ida)
        assert refused.status_code == 401 and refused.json()["detail"] == "user 'ida' is deactivated"
        assert http.patch("/api/users/admin", json={"active": False}, headers=admin).status_code == 409
