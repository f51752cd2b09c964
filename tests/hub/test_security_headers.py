"""Security headers on every answer: each route of the hub (its whole route list, every method) as an
anonymous caller and as the admin, the gate's 401, the body limit's 413, 404s, static files, pages, an
unhandled error's 500, and HSTS over HTTPS only."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

from consortium.config import HubSettings
from consortium.hub.app import create_app
from consortium.hub.gate import Gate
from consortium.hub.security_headers import API_POLICY, DOCS_POLICY, HSTS, WEB_POLICY, HubApp

TOKEN = "csm_" + "s" * 40
ALWAYS = ("x-content-type-options", "x-frame-options", "content-security-policy", "referrer-policy",
          "cache-control")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> HubApp:
    built = create_app(HubSettings.from_args(None, tmp_path_factory.mktemp("headers"), TOKEN))
    assert isinstance(built, HubApp)
    return built


@pytest.fixture(scope="module")
def client(app: HubApp) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def assert_secured(response, what: str) -> None:
    missing = [name for name in ALWAYS if name not in response.headers]
    assert not missing, f"{what} -> {response.status_code} lacks {missing}"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    if response.headers.get("content-type", "").startswith("text/html"):
        assert response.headers["content-security-policy"] in (WEB_POLICY, DOCS_POLICY), what
    if response.headers.get("content-type", "").startswith("application/json"):
        assert response.headers["content-security-policy"] == API_POLICY, what
        assert response.headers["cache-control"] == "no-store", what
    assert "strict-transport-security" not in response.headers, f"{what}: HSTS over plain HTTP"


def concrete(path: str) -> str:
    """A route's path with each parameter filled in (ids 1, names a, paths a/b)."""
    return re.sub(r"\{(\w+)(:path)?\}", lambda m: "a/b" if m.group(2) else ("1" if "id" in m.group(1) else "a"),
                  path)


def every_route(app: HubApp) -> list[tuple[str, str]]:
    """(method, path) of each route: the gate's list (the app's own routes and every router's)."""
    found = set()
    gate = next(m for m in app.user_middleware if m.cls is Gate)
    for route in gate.kwargs["routes"]:
        if isinstance(route, APIRoute | Route):
            for method in route.methods or ():
                found.add((method, concrete(route.path)))
    return sorted(found)


def test_the_route_walk_covers_the_whole_api(app: HubApp) -> None:
    routes = every_route(app)
    assert len(routes) > 100
    assert ("GET", "/api/health") in routes and ("POST", "/api/node/tasks/1/update") in routes


@pytest.mark.parametrize("who", ["anonymous", "admin"])
def test_every_route_answers_with_the_headers(app: HubApp, client: TestClient, who: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"} if who == "admin" else {}
    statuses = set()
    for method, path in every_route(app):
        if method == "HEAD":
            continue
        query = {"wait": "0"} if method == "GET" else {}
        response = client.request(method, path, headers=headers, params=query,
                                  content=b"{}" if method in ("POST", "PUT", "PATCH") else None)
        statuses.add(response.status_code)
        assert_secured(response, f"{who} {method} {path}")
    assert {200, 401 if who == "anonymous" else 404} <= statuses


def test_errors_from_the_gate_the_body_limit_and_unknown_addresses(client: TestClient) -> None:
    cases = {
        "gate 401": client.get("/api/runs"),
        "bad token 401": client.get("/api/runs", headers={"Authorization": "Bearer csm_nope"}),
        "bad signature 401": client.get("/api/runs", headers={"X-Consortium-Key": "x"}),
        "413": client.post("/api/enrol", content=b"x" * (2 << 20)),
        "api 404": client.get("/api/nowhere", headers={"Authorization": f"Bearer {TOKEN}"}),
        "page 404": client.get("/nowhere"),
        "422": client.post("/api/orgs", headers={"Authorization": f"Bearer {TOKEN}"}, content=b"[NaN]"),
    }
    for what, response in cases.items():
        assert response.status_code >= 400, what
        assert_secured(response, what)


def test_pages_static_files_and_the_api_viewer(client: TestClient) -> None:
    page = client.get("/login")
    assert page.status_code == 200 and page.headers["content-security-policy"] == WEB_POLICY
    assert page.headers["cache-control"] == "no-store"
    for path in ("/static/web.css", "/static/ledger.js"):
        static = client.get(path)
        assert static.status_code == 200
        assert_secured(static, path)
        assert static.headers["cache-control"] == "max-age=3600", "a static file keeps its own caching"
        assert static.headers["content-security-policy"] == API_POLICY
    docs = client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-security-policy"] == DOCS_POLICY
    health = client.get("/api/health")
    assert health.status_code == 200 and health.headers["content-security-policy"] == API_POLICY


def test_hsts_over_https_only(app: HubApp) -> None:
    with TestClient(app, base_url="https://hub.example") as secure:
        response = secure.get("/api/health")
        assert response.headers["strict-transport-security"] == HSTS
        assert secure.get("/api/runs").headers["strict-transport-security"] == HSTS


def test_an_unhandled_error_still_has_the_headers() -> None:
    broken = HubApp()

    @broken.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    response = TestClient(broken, raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    assert_secured(response, "unhandled 500")
