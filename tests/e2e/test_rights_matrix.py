"""The permission matrix over real HTTP: every route that names a data source or a model, walked by three orgs
(each as its key, a steward and a researcher), the admin and an anonymous caller, over private / members /
public sources granted widely or narrowly, and over a trained model and released models with download yes
or no. Where the rights say no there is no 2xx, and the answer is byte for byte the one for an object that
does not exist (the same route with a ghost name or id).

North publishes six copies of its digits: each visibility, with ``process`` to every member and
``download`` to everyone ("wide"), or both to south only ("narrow"); east publishes an environment of each
visibility. Project P (north's key) trains on north's and south's public ``m-data`` (download: everyone) in
four one-round runs; its models: one left trained, three released. The release proposal is another
helper's work, so this test writes the release columns (what a passed ``release_model`` sets) directly.
The rules are restated here from docs/governance.md, independently of ``permissions.py``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import pytest

from consortium import crypto
from consortium.client import HubClient
from consortium.launch import Process, start_hub, start_node
from consortium.node import actions
from consortium.node.environments import prepare_environment
from consortium.protocol import SAFETENSORS_MEDIA_TYPE
from consortium.scenario import ORGS, DigitsConsortium, approve_as, digits_spec, provision_digits, vote_as

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
NORTH, SOUTH, EAST = ORGS
JSON = "application/json"
GHOST_ID = 2_000_000_001


@dataclass(frozen=True)
class Caller:
    name: str
    org: str | None = None
    token: str | None = None
    identity: crypto.OrgIdentity | None = None
    admin: bool = False
    role: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.token is None and self.identity is None

    @property
    def acts_for_org(self) -> bool:
        return self.identity is not None or self.role == "steward"


@dataclass(frozen=True)
class Source:
    """A data source as this test set it up: ``process`` / ``download`` are "members", "everyone",
    "nobody" or a tuple of org names."""

    kind: str  # "datasets" or "environments"
    owner: str
    name: str
    visibility: str
    process: str | tuple[str, ...] = "members"
    download: str | tuple[str, ...] = "nobody"

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True)
class Release:
    visibility: str
    process: str | tuple[str, ...]
    download: str | tuple[str, ...]


@dataclass
class World:
    url: str
    callers: list[Caller]
    sources: list[Source]
    participants: set[str]
    project_id: int
    run_id: int
    models: dict[int, Release | None]
    params: dict[int, str]
    tag: str
    http: httpx.Client
    created: list[str] = field(default_factory=list)

    def send(self, caller: Caller, method: str, path: str, body: bytes = b"",
             content_type: str | None = None) -> httpx.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        if caller.token:
            headers["Authorization"] = f"Bearer {caller.token}"
        if caller.identity:
            headers.update(crypto.sign_request(caller.identity, method, path, body, now=time.time()))
        return self.http.request(method, path, content=body, headers=headers)


# ---------------------------------------------------------------------------------------------- the rules


def holds(grant: str | tuple[str, ...], caller: Caller) -> bool:
    """Whether a grant names the caller (``everyone`` anybody; otherwise only a member org)."""
    if grant == "everyone":
        return True
    if caller.org is None:
        return False
    return grant == "members" or (isinstance(grant, tuple) and caller.org in grant)


def sees_source(c: Caller, s: Source) -> bool:
    return s.visibility == "public" or c.org == s.owner or (
        s.visibility == "members" and (c.org is not None or c.admin))


def processes_source(c: Caller, s: Source) -> bool:
    if c.admin:
        return s.process in ("members", "everyone")
    return c.org == s.owner or (c.org is not None and holds(s.process, c))


def narrower(a: str | tuple[str, ...], b: str | tuple[str, ...]) -> str | tuple[str, ...]:
    order = ["everyone", "members"]
    if a in order and b in order:
        return order[max(order.index(a), order.index(b))]
    if a in order:
        return b
    if b in order:
        return a
    return tuple(sorted(set(a) & set(b))) if a != "nobody" and b != "nobody" else "nobody"


Rule = Callable[[Caller], bool]


def model_rules(w: World, release: Release | None) -> tuple[Rule, Rule]:
    """(sees, downloads) of a model: a trained one its participants and the admin; a released one also
    whoever the release, narrowed by the inputs (both public, download everyone), lets in."""
    def inside(c: Caller) -> bool:
        return c.admin or c.org in w.participants

    if release is None:
        return inside, inside
    download = narrower(release.download, "everyone")

    def sees(c: Caller) -> bool:
        return inside(c) or release.visibility == "public" or (
            release.visibility == "members" and c.org is not None)

    return sees, lambda c: inside(c) or (sees(c) and holds(download, c))


# ---------------------------------------------------------------------------------------------- set-up


def register_copy(consortium: DigitsConsortium, workdir: Path, org: str, name: str, rows: int) -> None:
    frame = pd.read_csv(workdir / "data" / f"{org}.csv").iloc[:rows]
    path = workdir / "data" / f"{org}-{name}.csv"
    frame.to_csv(path, index=False)
    loaded, card = actions.prepare_dataset(path, name, "CC-BY-4.0", target="label")
    with consortium.org_client(org) as client:
        actions.register_dataset(client, consortium.org_dirs[org], loaded, card)


def wait_done(client: HubClient, run_id: int, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.run(run_id)
        if run["status"] != "running":
            return run
        client.progress(run_id, after_round=run["current_round"], wait=5.0)
    raise AssertionError(f"run {run_id} did not finish within {timeout}s")


def grant_json(grant: str | tuple[str, ...]) -> str | list[str]:
    return list(grant) if isinstance(grant, tuple) else grant


def release(consortium: DigitsConsortium, hub_url: str, model_id: int, decision: Release) -> None:
    """Release the model as the consortium does: north proposes, every member votes yes (the data owners
    north and south hold a veto), and the hub's effect writes the decision."""
    download = decision.download != "nobody"
    with consortium.org_client(NORTH) as north:
        licence = north.model(model_id)["license"]
        proposal = north.propose_release(model_id, licence, visibility=decision.visibility, download=download,
                                         process=decision.process != "nobody")
    for org in ORGS:
        with consortium.org_client(NORTH) as north:
            if north.proposal(proposal["id"])["status"] != "open":
                break
        vote_as(consortium.org_dirs[org], hub_url, proposal["id"], "yes")
    with consortium.org_client(NORTH) as north:
        model = north.model(model_id)
    assert (model["status"], model["visibility"]) == ("released", decision.visibility), model


def make_callers(hub, org_dirs: dict[str, Path]) -> list[Caller]:
    callers = [Caller("anonymous"), Caller("admin", token=hub.admin_token, admin=True)]
    with hub.client() as admin:
        for org, org_dir in org_dirs.items():
            callers.append(Caller(f"{org} key", org, identity=crypto.load_org_identity(org_dir)))
            for role in ("steward", "researcher"):
                token = admin.create_user(f"{org}-{role}", role, org)["token"]
                callers.append(Caller(f"{org}-{role}", org, token=token, role=role))
    return callers


RELEASES = [None, Release("public", "members", "everyone"), Release("members", "members", "nobody"),
            Release("members", "members", "members")]
"""A trained model and three releases, as a release proposal can ask: a public release's download grant is
everyone's, a members release's the members'."""


@pytest.fixture(scope="module")
def world(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("rights")
    hub = start_hub(workdir / "hub", db_url=module_db_url)
    nodes: list[Process] = []
    try:
        consortium = provision_digits(hub, workdir, ORGS)
        tag = secrets.token_hex(3)
        sources: list[Source] = []
        for visibility in ("private", "members", "public"):
            for width, process, download in [("wide", "members", "everyone"), ("narrow", (SOUTH,), (SOUTH,))]:
                name = f"{visibility}-{width}-{tag}"
                source = Source("datasets", NORTH, name, visibility, process, download)
                register_copy(consortium, workdir, NORTH, source.name, 40)
                sources.append(source)
            arena = prepare_environment(f"arena-{visibility}-{tag}", "CartPole-v1", {"length": 0.7}, "MIT",
                                        visibility="members", private_physics=True)
            with consortium.org_client(EAST) as east:
                east.register_environment(arena.card)
            sources.append(Source("environments", EAST, arena.card.name, visibility))
        for org in (NORTH, SOUTH):
            register_copy(consortium, workdir, org, "m-data", 200)
        with consortium.org_client(NORTH) as north, consortium.org_client(EAST) as east:
            for s in sources:
                owner = north if s.owner == NORTH else east
                owner.set_source_rights(s.ref, kind=s.kind, visibility=s.visibility,
                                        process=grant_json(s.process), download=grant_json(s.download))
        for org in (NORTH, SOUTH):
            with consortium.org_client(org) as client:
                client.set_source_rights(f"{org}/m-data", visibility="public", download="everyone")
        with consortium.org_client(NORTH) as north:
            project = north.create_project(digits_spec(
                f"rights-{tag}", [NORTH, SOUTH], rounds=1, datasets=[f"{NORTH}/m-data", f"{SOUTH}/m-data"]))
        for org in (NORTH, SOUTH):
            approve_as(consortium.org_dirs[org], hub.url, project)
        nodes = [start_node(hub.url, consortium.org_dirs[org], poll_wait=5.0) for org in (NORTH, SOUTH)]
        models: dict[int, Release | None] = {}
        params: dict[int, str] = {}
        with hub.client() as admin:
            admin.wait_online([NORTH, SOUTH])
        with consortium.org_client(NORTH) as north:
            for decision in RELEASES:
                run_id = north.start_run(project["id"])["id"]
                run = wait_done(north, run_id)
                assert run["status"] == "completed", [run.get("error"), *(n.log_tail(20) for n in nodes)]
                models[run["model_id"]] = decision
                params[run["model_id"]] = north.model(run["model_id"])["params_sha256"]
        for node in nodes:
            node.stop()
        for model_id, decision in models.items():
            if decision is not None:
                release(consortium, hub.url, model_id, decision)
        callers = make_callers(hub, consortium.org_dirs)
        with httpx.Client(base_url=hub.url, trust_env=False, timeout=30.0) as http:
            yield World(hub.url, callers, sources, {NORTH, SOUTH}, project["id"], run_id, models, params, tag,
                        http)
    finally:
        for node in nodes:
            node.stop()
        hub.stop()


# ---------------------------------------------------------------------------------------------- probes


@dataclass(frozen=True)
class Probe:
    """A request, who gets through (``allowed``), what a caller it refuses gets (``denied``: 401, 403 or
    404 when not given: missing) and the ghost params that name nothing; ``check`` looks at an allowed
    answer."""

    method: str
    route: str
    params: dict
    ghost: dict
    allowed: Callable[[Caller], bool]
    body: bytes = b""
    content_type: str | None = None
    authenticated: bool = False
    denied: Callable[[Caller], int] | None = None
    check: Callable[[Caller, httpx.Response], None] | None = None

    def path(self, ghost: bool = False) -> str:
        return self.route.format(**(self.params | (self.ghost if ghost else {})))


def expect_2xx(caller: Caller, response: httpx.Response) -> None:
    assert 200 <= response.status_code < 300, (caller.name, response.status_code, response.text[:300])


def weights_of(sha256: str) -> Callable[[Caller, httpx.Response], None]:
    def check(caller: Caller, response: httpx.Response) -> None:
        assert response.status_code == 200, (caller.name, response.text[:300])
        assert response.headers["content-type"] == SAFETENSORS_MEDIA_TYPE
        assert crypto.sha256_hex(response.content) == sha256

    return check


def no_file(caller: Caller, response: httpx.Response) -> None:
    """A classifier has no released files: a caller who may download hears that, not 'no model'."""
    assert response.status_code == 404 and "has no file" in response.json()["detail"], (caller.name,
                                                                                         response.text)


def source_probes(w: World) -> list[Probe]:
    probes = []
    for s in w.sources:
        params, ghost = {"org": s.owner, "name": s.name}, {"name": f"ghost-{w.tag}"}
        sees = (lambda src: lambda c: sees_source(c, src))(s)
        route = f"/api/{s.kind}/{{org}}/{{name}}"
        probes.append(Probe("GET", route, params, ghost, sees))
        if s.kind == "datasets":
            probes.append(Probe("GET", route + "/croissant", params, ghost, sees))
        owner = (lambda src: lambda c: c.org == src.owner and c.acts_for_org)(s)
        researcher = (lambda src: lambda c: 403 if c.org == src.owner else 404)(s)
        body = json.dumps({"visibility": s.visibility}).encode()  # the same: an allowed call changes nothing
        probes.append(Probe("PATCH", route, params, ghost, owner, body, JSON, authenticated=True,
                            denied=researcher))
        if s.kind == "datasets":
            spec = digits_spec(f"probe-{s.name}", [NORTH, EAST], rounds=1,
                               datasets=[s.ref, f"{EAST}/digits"]).model_dump(mode="json")
            may = (lambda src: lambda c: sees_source(c, src) and processes_source(c, src))(s)
            no_right = (lambda src: lambda c: 403 if sees_source(c, src) else 404)(s)
            probes.append(Probe("POST", "/api/projects", params, ghost, may, json.dumps(spec).encode(), JSON,
                                authenticated=True, denied=no_right, check=named_project(w, s)))
    return probes


def named_project(w: World, s: Source) -> Callable[[Caller, httpx.Response], None]:
    """An allowed proposal is created; the probe renames it per caller so that each is new."""
    def check(caller: Caller, response: httpx.Response) -> None:
        assert response.status_code == 201, (caller.name, s.ref, response.text[:300])
        w.created.append(response.json()["name"])

    return check


def model_probes(w: World) -> list[Probe]:
    probes = []
    for model_id, decision in w.models.items():
        sees, downloads = model_rules(w, decision)
        params, ghost = {"model_id": model_id}, {"model_id": GHOST_ID}
        probes += [
            Probe("GET", "/api/models/{model_id}", params, ghost, sees),
            Probe("GET", "/api/models/{model_id}/card.md", params, ghost, sees),
            Probe("GET", "/api/models/{model_id}/weights", params, ghost, downloads,
                  check=weights_of(w.params[model_id])),
            Probe("GET", "/api/models/{model_id}/files/{name}", params | {"name": "samples.png"}, ghost,
                  downloads, check=no_file),
        ]
    inside = lambda c: c.admin or c.org in w.participants  # noqa: E731
    probes += [
        Probe("GET", "/api/projects/{project_id}", {"project_id": w.project_id}, {"project_id": GHOST_ID},
              inside, authenticated=True),
        Probe("GET", "/api/runs/{run_id}", {"run_id": w.run_id}, {"run_id": GHOST_ID}, inside,
              authenticated=True),
        Probe("GET", "/api/runs/{run_id}/progress", {"run_id": w.run_id}, {"run_id": GHOST_ID}, inside,
              authenticated=True),
    ]
    return probes


def send(w: World, caller: Caller, probe: Probe, ghost: bool = False) -> httpx.Response:
    """Send ``probe`` as ``caller``; ``ghost``: naming nothing instead (in the path, or in a proposal's
    body). A proposal is renamed per caller, so that each allowed one is new."""
    body = probe.body
    if probe.method == "POST":
        if ghost:
            key = next(iter(probe.ghost))
            body = body.replace(str(probe.params[key]).encode(), str(probe.ghost[key]).encode())
        else:
            spec = json.loads(body)
            spec["name"] = f"{spec['name']}-{caller.name.replace(' ', '-')}"[:63]
            body = json.dumps(spec).encode()
    return w.send(caller, probe.method, probe.path(ghost), body, probe.content_type)


@pytest.fixture(scope="module")
def walk(world: World) -> list[tuple[Caller, Probe, httpx.Response]]:
    probes = source_probes(world) + model_probes(world)
    return [(c, p, send(world, c, p)) for p in probes for c in world.callers]


# ---------------------------------------------------------------------------------------------- tests


OPEN_DATA = "open data versions: publish (owner only), download by the download right, anonymous for public "
COVERED_ELSEWHERE = {
    (method, path): OPEN_DATA + "data, 404 otherwise: tests/e2e/test_open_data.py"
    for method, path in [
        ("PUT", "/api/datasets/{org}/{name}/uploads/{sha256}"), ("GET", "/api/datasets/{org}/{name}/uploads/{sha256}"),
        ("POST", "/api/datasets/{org}/{name}/versions"), ("GET", "/api/datasets/{org}/{name}/versions"),
        ("GET", "/api/datasets/{org}/{name}/versions/{version}"),
        ("GET", "/api/datasets/{org}/{name}/versions/{version}/file"),
        ("POST", "/api/datasets/{org}/{name}/versions/{version}/withdraw"),
    ]
}
"""Routes naming a source whose rights a test of their own walks (caller by caller), with where."""


def test_every_route_naming_a_source_or_model_is_in_the_matrix(world: World) -> None:
    spec = world.http.get("/openapi.json").json()
    routes = {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops
              if path.startswith(("/api/datasets/{", "/api/environments/{", "/api/models/{"))}
    probed = {(p.method, p.route) for p in source_probes(world) + model_probes(world)}
    assert routes and routes - COVERED_ELSEWHERE.keys() <= probed, routes - probed - COVERED_ELSEWHERE.keys()
    assert COVERED_ELSEWHERE.keys() <= routes, "a route listed as covered elsewhere is gone"


def test_no_2xx_where_the_rights_say_no_and_a_refusal_looks_missing(world: World, walk) -> None:
    refused = allowed = 0
    for caller, probe, response in walk:
        if probe.allowed(caller):
            allowed += 1
            (probe.check or expect_2xx)(caller, response)
            continue
        refused += 1
        assert not 200 <= response.status_code < 300, (caller.name, probe.method, probe.path())
        if caller.anonymous and probe.authenticated:
            assert response.status_code == 401, (caller.name, probe.path(), response.text)
            continue
        status = probe.denied(caller) if probe.denied else 404
        assert response.status_code == status, (caller.name, probe.method, probe.path(), response.text)
        if status == 404:
            ghost = send(world, caller, probe, ghost=True)
            assert ghost.status_code == 404, (caller.name, probe.path(ghost=True), ghost.text)
            key = next(iter(probe.ghost))
            real, fake = str(probe.params[key]), str(probe.ghost[key])
            assert response.content == ghost.content.replace(fake.encode(), real.encode()), (
                caller.name, probe.path(), response.text, ghost.text)
    assert refused > 150 and allowed > 100, (refused, allowed)
    assert len(world.created) == sum(1 for c, p, _ in walk if p.method == "POST" and p.allowed(c))


def test_lists_show_each_caller_exactly_the_cards_it_may_see(world: World) -> None:
    everything = {(s.kind, s.ref) for s in world.sources}
    for caller in world.callers:
        for kind in ("datasets", "environments"):
            response = world.send(caller, "GET", f"/api/{kind}")
            assert response.status_code == 200, (caller.name, response.text)
            cards = {(kind, f"{c['org']}/{c['name']}"): c for c in response.json()}
            expected = {(s.kind, s.ref) for s in world.sources if s.kind == kind and sees_source(caller, s)}
            assert set(cards) & everything == expected, caller.name
            for s in world.sources:
                if (s.kind, s.ref) in cards:
                    card = cards[(s.kind, s.ref)]
                    assert (card["visibility"], card["process"], card["download"]) == (
                        s.visibility, grant_json(s.process), grant_json(s.download))
                else:
                    assert s.name not in response.text, (caller.name, s.ref)
