"""Object-level access over real HTTP: every route of the hub's OpenAPI walked as every kind of principal.

A real hub (SQLite or PostgreSQL) with three orgs, a steward and a researcher in each, a researcher without an
org, and the admin. Project P1 trains on north's private dataset and south's members dataset (proposed by
north's researcher), P2 on east's dataset only (proposed by east's steward); both run to completion on real
node processes after their data owners voted yes. East also holds a private environment. A fourth org, west,
is admitted by the votes of the three after both projects' proposals opened, so it is neither a participant
nor a voter of them: a project's proposals reach its participants and the members that were asked (voters
and advisory voters), nobody else. An admission proposal for a fifth org stays open. Every route must be
probed here or listed in ``NOT_OBJECT_SCOPED`` with the reason, so a new route cannot slip past the matrix.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import pytest
import torch
from sqlalchemy import select

from consortium import crypto
from consortium.client import HubClient
from consortium.codec import encode_tensors
from consortium.fl.core import parse_hyperparams
from consortium.fl.registry import get_algorithm
from consortium.hub.db.models import LedgerEntry, Org, Run, Task
from consortium.hub.db.session import make_engine, session_factory
from consortium.launch import HubProcess, Process, provision_org, start_hub, start_node
from consortium.ledger.chain import ChainedEntry, verify_chain
from consortium.node import actions
from consortium.node.challenges import open_challenge, prepare_statement
from consortium.node.environments import prepare_environment
from consortium.protocol import SAFETENSORS_MEDIA_TYPE, OrgOut
from consortium.scenario import (
    DIGITS_HYPERPARAMETERS,
    ORGS,
    DigitsConsortium,
    approve_as,
    digits_spec,
    provision_digits,
)
from consortium.test_sets import bundle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
NORTH, SOUTH, EAST = ORGS
WEST, APPLICANT = "west-hospital", "applicant-lab"

NOT_OBJECT_SCOPED = {
    ("GET", "/api/health"): "liveness, code version, the hub's id (what votes name) and public key; "
                            "no member data",
    ("GET", "/api/me"): "the caller's own identity",
    ("GET", "/api/node/secagg/{task_id}/{stage}"): "exists only while a SecAgg round runs (in memory); another "
                                                   "org's task is a 404 like a missing one: tests/e2e/"
                                                   "test_secagg_run.py",
    ("POST", "/api/node/secagg/{task_id}/{stage}"): "exists only while a SecAgg round runs (in memory); another "
                                                    "org's task is a 404 like a missing one: tests/e2e/"
                                                    "test_secagg_run.py",
    ("GET", "/api/credits/{org}"): "an org's balance and movements: every member's (each movement is a "
                                   "members-scope ledger entry); tests/hub/services/test_credit_accounts.py",
    ("POST", "/api/enrol"): "anonymous by design; a node proves itself with a one-time enrolment token",
    ("POST", "/api/datasets"): "registers a card of the caller's own org; names no other object",
    ("GET", "/api/datasets/{org}/{name}/uploads/{sha256}"): "the owner's staged upload (others: 403/404 as for the "
                                                            "card); tests/e2e/test_open_data.py",
    ("PUT", "/api/datasets/{org}/{name}/uploads/{sha256}"): "the owner's staged upload (others: 403/404 as for the "
                                                            "card); tests/e2e/test_open_data.py",
    ("GET", "/api/datasets/{org}/{name}/versions"): "the card's rule (404 where the card is); "
                                                    "tests/e2e/test_open_data.py",
    ("POST", "/api/datasets/{org}/{name}/versions"): "publish: the owner's key or steward only; "
                                                     "tests/e2e/test_open_data.py",
    ("GET", "/api/datasets/{org}/{name}/versions/{version}"): "the card's rule (404 where the card is); "
                                                              "tests/e2e/test_open_data.py",
    ("POST", "/api/datasets/{org}/{name}/versions/{version}/withdraw"): "the owner's key or steward only; "
                                                                        "tests/e2e/test_open_data.py",
    ("GET", "/api/datasets/{org}/{name}/versions/{version}/file"): "the card's download grant (404 without it, as "
                                                                   "for a missing version); tests/e2e/"
                                                                   "test_open_data.py",
    ("POST", "/api/licences/accept"): "the caller's own org accepts a licence; names no other object",
    ("POST", "/api/environments"): "registers a card of the caller's own org; names no other object",
    ("GET", "/api/ledger/checkpoint"): "signed Merkle roots and org cosignatures: every member's to audit",
    ("GET", "/api/ledger/checkpoints"): "signed Merkle roots and org cosignatures: every member's to audit",
    ("GET", "/api/ledger/proof/inclusion"): "hashes only (entry hashes are every member's); tests/hub/"
                                            "test_ledger_api.py",
    ("GET", "/api/ledger/proof/consistency"): "hashes only; tests/hub/test_ledger_api.py",
    ("GET", "/api/users"): "a list, not an object: the admin's all, a steward's its org's, 403 for others; "
                           "tests/hub/services/test_users.py",
    ("PATCH", "/api/users/{name}"): "role and activation rules (admin; steward within its org; last admin kept) "
                                    "in tests/hub/services/test_users.py",
    ("POST", "/api/users/{name}/tokens"): "self or the admin (the same rule as the probed GET); "
                                          "tests/hub/services/test_users.py",
    ("DELETE", "/api/users/{name}/tokens"): "self or the admin (the same rule as the probed GET); "
                                            "tests/hub/services/test_users.py",
    ("DELETE", "/api/users/{name}/tokens/{token_id}"): "self or the admin; tests/hub/services/test_users.py",
    ("GET", "/api/orgs/{name}/keys"): "an org's public keys and hand-over signatures: every member's, to verify "
                                      "the ledger",
    ("POST", "/api/orgs/{name}/keys"): "signed by the org's current key over the hand-over; forged, foreign and "
                                       "replayed rotations in tests/hub/services/test_org_keys.py",
    ("POST", "/api/ledger/checkpoints/{size}/cosign"): "an org's cosignature of a checkpoint, checked against "
                                                        "its own key; tests/hub/services/test_checkpoints.py",
}


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
    def label(self) -> str:
        """How the hub names the caller (a proposal's proposer)."""
        return f"org:{self.org}" if self.identity is not None else f"user:{self.name}"

    @property
    def acts_for_org(self) -> bool:
        """An org's key or one of its stewards: who may vote, and propose as a member."""
        return self.org is not None and (self.identity is not None or self.role == "steward")


@dataclass
class Scene:
    """One project as the test set it up: its objects' ids and the orgs taking part."""

    id: int
    name: str
    orgs: set[str]
    proposer: str = ""
    run_id: int = 0
    model_id: int = 0
    tasks: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Ballot:
    """A proposal as the admin reads it: what decides who may see it and act on it."""

    id: int
    kind: str
    project_id: int | None
    proposer: str
    voters: frozenset[str]
    advisory: frozenset[str]
    status: str

    @classmethod
    def of(cls, row: dict) -> Ballot:
        return cls(row["id"], row["kind"], row["subject"].get("project_id"), row["proposer"],
                   frozenset(row["electorate"] + row["veto_holders"] + row["must_approve"]),
                   frozenset(row["advisory"]), row["status"])


@dataclass(frozen=True)
class Contest:
    """North's challenge (its test set on north's disk) and south's one submission to it."""

    id: int
    submission_id: int
    statement: dict


@dataclass
class World:
    hub: HubProcess
    db_url: str
    callers: list[Caller]
    p1: Scene
    p2: Scene
    vault: dict
    arena: dict
    http: httpx.Client
    ballots: list[Ballot]
    contest: Contest

    def send(self, caller: Caller, method: str, path: str, body: bytes = b"",
             content_type: str | None = None) -> httpx.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        if caller.token:
            headers["Authorization"] = f"Bearer {caller.token}"
        if caller.identity:
            headers.update(crypto.sign_request(caller.identity, method, path, body, now=time.time()))
        return self.http.request(method, path, content=body, headers=headers)

    def scenes(self) -> list[Scene]:
        return [self.p1, self.p2]

    def scene(self, project_id: int) -> Scene:
        return next(s for s in self.scenes() if s.id == project_id)

    def ballot(self, proposal_id: int) -> Ballot:
        return next(b for b in self.ballots if b.id == proposal_id)

    def sees(self, caller: Caller, ballot: Ballot) -> bool:
        """A project's proposal: its participants and the orgs asked to vote on it (counted or advisory); a
        membership proposal: every member."""
        if ballot.project_id is None:
            return member(caller)
        asked = ballot.voters | ballot.advisory
        return takes_part(caller, self.scene(ballot.project_id)) or caller.org in asked

    def sees_subject(self, caller: Caller, scene: Scene) -> bool:
        """Whether the caller may read what a proposal of ``scene`` names (the project's name)."""
        return any(self.sees(caller, b) for b in self.ballots if b.project_id == scene.id)


def takes_part(caller: Caller, scene: Scene) -> bool:
    return caller.admin or caller.org in scene.orgs


def member(caller: Caller) -> bool:
    return caller.admin or caller.org is not None


def register_private_dataset(consortium: DigitsConsortium, workdir: Path, org: str, name: str) -> dict:
    """Two thirds of ``org``'s digits as a private dataset (distinct rows and hash), known to its node."""
    frame = pd.read_csv(workdir / "data" / f"{org}.csv")
    path = workdir / "data" / f"{name}.csv"
    frame.iloc[: 2 * len(frame) // 3].to_csv(path, index=False)
    loaded, card = actions.prepare_dataset(path, name, "CC-BY-4.0", target="label", visibility="private")
    with consortium.org_client(org) as client:
        actions.register_dataset(client, consortium.org_dirs[org], loaded, card)
    return {"name": name, "sha256": card.sha256, "rows": card.rows}


def wait_done(client: HubClient, run_id: int, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.run(run_id)
        if run["status"] != "running":
            return run
        client.progress(run_id, after_round=run["current_round"], wait=5.0)
    raise AssertionError(f"run {run_id} did not finish within {timeout}s")


def make_callers(hub: HubProcess, org_dirs: dict[str, Path], outsiders: bool = True) -> list[Caller]:
    """Each org's key, steward and researcher; with ``outsiders`` also anonymous, the admin and a researcher
    without an org."""
    callers = [Caller("anonymous"), Caller("admin", token=hub.admin_token, admin=True)] if outsiders else []
    with hub.client() as admin:
        for org, org_dir in org_dirs.items():
            identity = crypto.load_org_identity(org_dir)
            callers.append(Caller(f"{org} key", org, identity=identity))
            for role in ("steward", "researcher"):
                token = admin.create_user(f"{org}-{role}", role, org)["token"]
                callers.append(Caller(f"{org}-{role}", org, token=token, role=role))
        if outsiders:
            loner = admin.create_user("lone-researcher", "researcher")["token"]
            callers.append(Caller("lone-researcher", token=loner, role="researcher"))
    return callers


def read_ballots(hub: HubProcess, scenes: list[Scene]) -> list[Ballot]:
    """Every proposal, with the facts the matrix relies on checked: each project's proposals ask its data
    owners (counted) and the other members of the time (advisory), never west, admitted later."""
    with hub.client() as admin:
        ballots = [Ballot.of(row) for row in admin.proposals()]
    owners = {scenes[0].id: {NORTH, SOUTH}, scenes[1].id: {EAST}}
    for ballot in ballots:
        if ballot.project_id is not None:
            assert ballot.voters == owners[ballot.project_id], ballot
            assert ballot.advisory == set(ORGS) - owners[ballot.project_id], ballot
    assert sorted((b.kind, b.project_id, b.status) for b in ballots if b.project_id is not None) == sorted(
        [("run_project", scenes[0].id, "withdrawn"), ("run_project", scenes[0].id, "passed"),
         ("run_project", scenes[1].id, "passed")])
    [pending] = [b for b in ballots if b.status == "open"]
    assert (pending.kind, pending.voters) == ("admit_org", {*ORGS, WEST})
    return ballots


def record_tasks(db_url: str, scenes: list[Scene]) -> None:
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as session:
            rows = session.execute(
                select(Task.id, Org.name, Run.project_id).join(Org, Org.id == Task.org_id)
                .join(Run, Run.id == Task.run_id).order_by(Task.id)
            )
            by_id = {scene.id: scene for scene in scenes}
            for task_id, org, project_id in rows:
                by_id[project_id].tasks.setdefault(org, task_id)
    finally:
        engine.dispose()


def open_contest(consortium: DigitsConsortium, workdir: Path) -> Contest:
    """North opens a challenge on the digits test split (kept on its disk); south submits once."""
    frame = pd.DataFrame(consortium.x_test.astype("float64"), columns=[f"p{i}" for i in range(64)])
    frame["label"] = consortium.y_test
    frame.to_csv(workdir / "contest.csv", index=False)
    with consortium.org_client(NORTH) as north:
        statement, test_set = prepare_statement(
            hub_id=north.health()["hub_id"], host=NORTH, name="contest", task="classify digits",
            path=workdir / "contest.csv", target="label", metric="accuracy", higher_is_better=True,
            deadline=datetime.now(UTC) + timedelta(days=1), daily_limit=3, prize=0, split_seed=1,
            public_fraction=0.5)
        opened = open_challenge(north, consortium.org_dirs[NORTH], statement, test_set)
    family = get_algorithm("classifier")
    params = family.init(parse_hyperparams(family, DIGITS_HYPERPARAMETERS), 64, 0)
    spec = {"name": "classifier", "hyperparameters": DIGITS_HYPERPARAMETERS}
    with consortium.org_client(SOUTH) as south:
        submitted = south.submit_challenge_weights(opened["id"], encode_tensors(
            params, metadata={"submission": json.dumps({"algorithm": spec})}))
    return Contest(opened["id"], submitted["id"], statement.model_dump(mode="json", by_alias=True))


@pytest.fixture(scope="module")
def world(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("access")
    hub = start_hub(workdir / "hub", db_url=module_db_url)
    nodes: list[Process] = []
    try:
        consortium = provision_digits(hub, workdir, ORGS)
        tag = secrets.token_hex(4)
        vault = register_private_dataset(consortium, workdir, NORTH, f"vault-{tag}")
        arena = prepare_environment(f"arena-{tag}", "CartPole-v1", {"length": 0.7}, "MIT",
                                    visibility="private", private_physics=True)
        with consortium.org_client(EAST) as east:
            east.register_environment(arena.card)
        callers = make_callers(hub, consortium.org_dirs)
        token = {c.name: c.token for c in callers}
        with HubClient(hub.url, token=token[f"{NORTH}-researcher"]) as proposer:
            spec = digits_spec(f"p1-{tag}", [NORTH, SOUTH], rounds=2,
                               datasets=[f"{NORTH}/{vault['name']}", f"{SOUTH}/digits"])
            p1 = proposer.create_project(spec)
            proposer.put_test_set(p1["id"], consortium.test_set_bytes())
        with HubClient(hub.url, token=token[f"{EAST}-steward"]) as proposer:
            p2 = proposer.create_project(digits_spec(f"p2-{tag}", [EAST], rounds=1, min_nodes=1))
        for org, project in [(NORTH, p1), (SOUTH, p1), (EAST, p2)]:
            approve_as(consortium.org_dirs[org], hub.url, project)
        nodes = [start_node(hub.url, consortium.org_dirs[org], poll_wait=5.0) for org in ORGS]
        with hub.client() as admin:
            admin.wait_online(list(ORGS))
        scenes = [Scene(p1["id"], p1["name"], {NORTH, SOUTH}, p1["proposer"]),
                  Scene(p2["id"], p2["name"], {EAST}, p2["proposer"])]
        for scene, starter in zip(scenes, [f"{NORTH}-researcher", f"{EAST}-steward"], strict=True):
            with HubClient(hub.url, token=token[starter]) as client:
                scene.run_id = client.start_run(scene.id)["id"]
        with hub.client() as admin:
            for scene in scenes:
                run = wait_done(admin, scene.run_id)
                assert run["status"] == "completed", run
                scene.model_id = run["model_id"]
        for node in nodes:
            node.stop()
        record_tasks(module_db_url, scenes)
        west_dir = workdir / "orgs" / WEST
        with hub.client() as admin:
            # two yes of three pass the admission (a third vote would come after the decision)
            voters = {org: consortium.org_dirs[org] for org in (NORTH, SOUTH)}
            provision_org(admin, hub.url, west_dir, WEST, voters=voters)
            admin.create_org(APPLICANT)
        callers += make_callers(hub, {WEST: west_dir}, outsiders=False)
        ballots = read_ballots(hub, scenes)
        arena_out = {"name": arena.card.name, "sha256": arena.card.physics_sha256}
        contest = open_contest(consortium, workdir)
        with httpx.Client(base_url=hub.url, trust_env=False, timeout=30.0) as http:
            yield World(hub, module_db_url, callers, scenes[0], scenes[1], vault, arena_out, http, ballots,
                        contest)
    finally:
        for node in nodes:
            node.stop()
        hub.stop()


# ---------------------------------------------------------------------------------------------- probes


@dataclass(frozen=True)
class Probe:
    """One concrete request (``route`` with ``params`` filled in, then ``query``) and who must get through:
    ``allowed(caller)``; ``check`` looks at an allowed caller's answer (default: 2xx)."""

    method: str
    route: str
    allowed: Callable[[Caller], bool]
    params: dict = field(default_factory=dict)
    query: str = ""
    body: bytes = b""
    content_type: str | None = None
    check: Callable[[Caller, httpx.Response], None] | None = None
    denied: Callable[[Caller], set[int]] | None = None
    """The answer a refused (authenticated) caller gets, when not the route's usual one."""

    @property
    def path(self) -> str:
        return self.route.format(**self.params) + self.query


JSON = "application/json"
TEST_SET = encode_tensors({"x": torch.zeros(2, 64), "y": torch.zeros(2, dtype=torch.int64)})


def expect_2xx(caller: Caller, response: httpx.Response) -> None:
    assert 200 <= response.status_code < 300, (caller.name, response.status_code, response.text[:300])


def expect_no_file(caller: Caller, response: httpx.Response) -> None:
    """A classifier's model has no released files: a participant passes the access check and hears that."""
    assert response.status_code == 404, (caller.name, response.text)
    assert "has no file" in response.json()["detail"], (caller.name, response.text)


def list_check(expected: Callable[[Caller], set[str]], key: Callable[[dict], str]):
    def check(caller: Caller, response: httpx.Response) -> None:
        assert response.status_code == 200, (caller.name, response.text[:300])
        assert {key(item) for item in response.json()} == expected(caller), caller.name

    return check


def read_probes(w: World) -> list[Probe]:
    everyone = lambda c: not c.anonymous  # noqa: E731
    probes: list[Probe] = []
    for s in w.scenes():
        part = (lambda scene: lambda c: takes_part(c, scene))(s)
        model = {"model_id": s.model_id}
        probes += [
            Probe("GET", "/api/projects/{project_id}", part, {"project_id": s.id}),
            Probe("GET", "/api/runs/{run_id}", part, {"run_id": s.run_id}),
            Probe("GET", "/api/runs/{run_id}/progress", part, {"run_id": s.run_id}),
            Probe("GET", "/api/models/{model_id}", part, model),
            Probe("GET", "/api/models/{model_id}/weights", part, model),
            Probe("GET", "/api/models/{model_id}/card.md", part, model),
            Probe("GET", "/api/models/{model_id}/files/{name}", part, model | {"name": "samples.png"},
                  check=expect_no_file),
            Probe("GET", "/api/projects/{project_id}/models", part, {"project_id": s.id},
                  check=list_check((lambda scene: lambda c: {scene.model_id})(s), lambda m: m["id"])),
        ]
        for org, task_id in s.tasks.items():
            owner = (lambda o: lambda c: c.identity is not None and c.org == o)(org)
            probes.append(Probe("GET", "/api/node/tasks/{task_id}/params", owner, {"task_id": task_id}))
    for target in (f"{NORTH}-researcher", f"{EAST}-steward"):
        probes.append(Probe("GET", "/api/users/{name}/tokens",
                            (lambda t: lambda c: c.admin or c.name == t)(target), {"name": target}))
    cards = [(NORTH, w.vault["name"], lambda c: c.org == NORTH), (SOUTH, "digits", member),
             (EAST, "digits", member)]
    for org, name, allowed in cards:
        probes += [Probe("GET", "/api/datasets/{org}/{name}", allowed, {"org": org, "name": name}),
                   Probe("GET", "/api/datasets/{org}/{name}/croissant", allowed, {"org": org, "name": name})]
    probes.append(Probe("GET", "/api/environments/{org}/{name}", lambda c: c.org == EAST,
                        {"org": EAST, "name": w.arena["name"]}))

    def projects(c: Caller) -> set[str]:
        return {s.name for s in w.scenes() if takes_part(c, s)}

    def datasets(c: Caller) -> set[str]:
        refs = {f"{org}/digits" for org in ORGS} if member(c) else set()
        return refs | ({f"{NORTH}/{w.vault['name']}"} if c.org == NORTH else set())

    def models(c: Caller) -> set[int]:
        return {s.model_id for s in w.scenes() if takes_part(c, s)}

    def environments(c: Caller) -> set[str]:
        return {f"{EAST}/{w.arena['name']}"} if c.org == EAST else set()

    def orgs(caller: Caller, response: httpx.Response) -> None:
        assert response.status_code == 200, response.text
        assert [(o["name"], o["status"]) for o in response.json()] == [
            *((org, "admitted") for org in (*ORGS, WEST)), (APPLICANT, "proposed")]
        assert all(set(o) == set(OrgOut.model_fields) for o in response.json())

    def proposals(scene: Scene | None) -> Callable[[Caller], set[int]]:
        return lambda c: {b.id for b in w.ballots
                          if w.sees(c, b) and (scene is None or b.project_id == scene.id)}

    for ballot in w.ballots:
        probes.append(Probe("GET", "/api/proposals/{proposal_id}", (lambda b: lambda c: w.sees(c, b))(ballot),
                            {"proposal_id": ballot.id}))

    def next_task(caller: Caller, response: httpx.Response) -> None:
        assert response.status_code == 204, (caller.name, response.text[:300])

    def ref(card: dict) -> str:
        return f"{card['org']}/{card['name']}"

    def catalogue(caller: Caller, response: httpx.Response) -> None:
        assert response.status_code == 200, (caller.name, response.text[:300])
        assert {item["dataset"] for item in response.json()["items"]} == datasets(caller), caller.name

    anybody = lambda c: True  # noqa: E731
    probes += [
        Probe("GET", "/api/catalogue", anybody, query="?limit=200", check=catalogue),
        Probe("GET", "/api/projects", everyone, check=list_check(projects, lambda p: p["name"])),
        Probe("GET", "/api/datasets", anybody, check=list_check(datasets, ref)),
        Probe("GET", "/api/environments", anybody, check=list_check(environments, ref)),
        Probe("GET", "/api/models", anybody, check=list_check(models, lambda m: m["id"])),
        Probe("GET", "/api/orgs", everyone, check=orgs),
        Probe("GET", "/api/proposals", everyone, check=list_check(proposals(None), lambda p: p["id"])),
        Probe("GET", "/api/proposals", everyone, query=f"?project_id={w.p1.id}",
              check=list_check(proposals(w.p1), lambda p: p["id"])),
        Probe("GET", "/api/policy", everyone),
        Probe("GET", "/api/credits", everyone),
        Probe("GET", "/api/ledger", everyone, query="?limit=10000"),
        Probe("GET", "/api/ledger/head", everyone),
        Probe("GET", "/api/node/tasks/next", lambda c: c.identity is not None, query="?wait=0",
              check=next_task),
    ]
    contest = {"challenge_id": w.contest.id}
    entrants = lambda c: {w.contest.submission_id} if c.admin or c.org in (NORTH, SOUTH) else set()  # noqa: E731
    north_key = lambda c: c.identity is not None and c.org == NORTH  # noqa: E731
    probes += [
        Probe("GET", "/api/challenges", everyone, check=list_check(lambda c: {w.contest.id}, lambda x: x["id"])),
        Probe("GET", "/api/challenges/{challenge_id}", everyone, contest),
        Probe("GET", "/api/challenges/{challenge_id}/leaderboard", everyone, contest),
        Probe("GET", "/api/challenges/{challenge_id}/submissions", everyone, contest,
              check=list_check(entrants, lambda x: x["id"])),
        Probe("GET", "/api/node/challenges/pending", lambda c: c.identity is not None),
        Probe("GET", "/api/node/challenges/submissions/{submission_id}/weights", north_key,
              {"submission_id": w.contest.submission_id}),
    ]
    return probes


def write_probes(w: World) -> list[Probe]:
    """Writes that name an object; only callers outside it are sent (they must change nothing)."""
    admin_only = lambda c: c.admin  # noqa: E731
    may_propose = lambda c: c.admin or c.acts_for_org  # noqa: E731
    forbidden = lambda c: {403}  # noqa: E731
    spec = digits_spec("probe-private", [NORTH, SOUTH], rounds=1,
                       datasets=[f"{NORTH}/{w.vault['name']}", f"{SOUTH}/digits"])
    probes = [
        Probe("POST", "/api/projects", lambda c: c.org == NORTH,
              body=json.dumps(spec.model_dump(mode="json")).encode(), content_type=JSON),
        Probe("POST", "/api/projects/with-test-set", lambda c: c.org == NORTH,
              body=bundle(spec.model_dump_json(), TEST_SET), content_type=SAFETENSORS_MEDIA_TYPE),
        Probe("POST", "/api/orgs", may_propose, body=b'{"name": "intruder"}', content_type=JSON),
        Probe("POST", "/api/proposals", may_propose, denied=forbidden, content_type=JSON,
              body=json.dumps({"kind": "suspend_org", "org": EAST, "reason": "probe"}).encode()),
        Probe("POST", "/api/orgs/{name}/enrolment-tokens", admin_only, {"name": EAST}, body=b"{}",
              content_type=JSON),
        Probe("POST", "/api/users", admin_only, body=b'{"name": "intruder", "role": "researcher"}',
              content_type=JSON),
    ]
    contest, in_org = {"challenge_id": w.contest.id}, lambda c: c.org is not None  # noqa: E731
    probes += [
        Probe("POST", "/api/challenges", lambda c: c.org == NORTH and c.acts_for_org, denied=forbidden,
              body=json.dumps({"statement": w.contest.statement | {"name": "rival"},
                               "signature": "A" * 86 + "=="}).encode(), content_type=JSON),
        Probe("POST", "/api/challenges/{challenge_id}/submissions", in_org, contest, denied=forbidden,
              body=b"not safetensors", content_type=SAFETENSORS_MEDIA_TYPE),
        Probe("POST", "/api/challenges/{challenge_id}/submissions/model", in_org, contest, denied=forbidden,
              body=json.dumps({"model_id": w.p1.model_id}).encode(), content_type=JSON),
        Probe("POST", "/api/node/challenges/submissions/{submission_id}/score",
              lambda c: c.identity is not None and c.org == NORTH, {"submission_id": w.contest.submission_id},
              body=b'{"statement": {}, "signature": "x"}', content_type=JSON),
    ]
    for kind, owner, name in [("datasets", NORTH, w.vault["name"]), ("environments", EAST, w.arena["name"])]:
        owns = (lambda o: lambda c: c.org == o and c.acts_for_org)(owner)
        probes.append(Probe(
            "PATCH", f"/api/{kind}/{{org}}/{{name}}", owns, {"org": owner, "name": name},
            body=b'{"visibility": "public"}', content_type=JSON,
            denied=(lambda o: lambda c: {403} if c.org == o else {404})(owner)))
    vote = json.dumps({"choice": "yes", "reason": "", "content_hash": "0" * 64,
                       "signature": "A" * 86 + "=="}).encode()
    for ballot in w.ballots:
        proposal = {"proposal_id": ballot.id}

        def hidden_or_forbidden(c: Caller, b: Ballot = ballot) -> set[int]:
            return {403} if w.sees(c, b) else {404}

        probes += [
            Probe("POST", "/api/proposals/{proposal_id}/votes",
                  (lambda b: lambda c: w.sees(c, b) and c.acts_for_org)(ballot), proposal, body=vote,
                  content_type=JSON, denied=hidden_or_forbidden),
            Probe("POST", "/api/proposals/{proposal_id}/withdraw",
                  (lambda b: lambda c: c.label == b.proposer)(ballot), proposal, body=b'{"reason": "probe"}',
                  content_type=JSON, denied=hidden_or_forbidden),
        ]
    for s in w.scenes():
        part = (lambda scene: lambda c: takes_part(c, scene))(s)
        project = {"project_id": s.id}
        probes += [
            Probe("PUT", "/api/projects/{project_id}/test-set", part, project, body=b"not safetensors",
                  content_type=SAFETENSORS_MEDIA_TYPE),
            Probe("POST", "/api/projects/{project_id}/withdraw",
                  (lambda scene: lambda c: c.label == scene.proposer)(s), project, body=b'{"reason": "probe"}',
                  content_type=JSON, denied=(lambda scene: lambda c: {403} if takes_part(c, scene) else {404})(s)),
            Probe("POST", "/api/projects/{project_id}/runs", part, project, body=b"{}", content_type=JSON),
        ]
        for org, task_id in s.tasks.items():
            owner = (lambda o: lambda c: c.identity is not None and c.org == o)(org)
            task = {"task_id": task_id}
            probes += [
                Probe("POST", "/api/node/tasks/{task_id}/update", owner, task, body=b"not safetensors",
                      content_type=SAFETENSORS_MEDIA_TYPE),
                Probe("POST", "/api/node/tasks/{task_id}/result", owner, task,
                      body=b'{"num_examples": 1, "metrics": {}, "compute_s": 0}', content_type=JSON),
                Probe("POST", "/api/node/tasks/{task_id}/refusal", owner, task, body=b'{"reason": "no"}',
                      content_type=JSON),
                Probe("POST", "/api/node/tasks/{task_id}/privacy-charge", owner, task,
                      body=b'{"noise_multiplier": 1.0, "sampling_rate": 1.0}', content_type=JSON),
            ]
    return probes


OPEN_TO_ANONYMOUS = ("/api/datasets", "/api/environments", "/api/models/", "/api/catalogue")
"""Routes an anonymous caller reaches (public cards and released models; tests/e2e/test_rights_matrix.py)."""


def denied_status(caller: Caller, probe: Probe) -> set[int]:
    """401 without credentials (or a user on a node endpoint), 403 for admin-only member management, and
    otherwise 404: an object the caller may not see does not exist for it. Anonymous callers reading a card
    or a model get 404 too: those routes are open to them for public objects."""
    if caller.anonymous and probe.method == "GET" and probe.route.startswith(OPEN_TO_ANONYMOUS):
        return {404}
    if caller.anonymous or (probe.route.startswith("/api/node/") and caller.identity is None):
        return {401}
    if probe.denied is not None:
        return probe.denied(caller)
    if probe.route in ("/api/orgs", "/api/orgs/{name}/enrolment-tokens", "/api/users"):
        return {403}
    return {404}


def secrets_of(w: World) -> list[tuple[str, Callable[[Caller], bool]]]:
    """(text, who may read it) for every value that must not reach anyone else."""
    in_p1 = lambda c: takes_part(c, w.p1)  # noqa: E731
    asked_p1 = lambda c: w.sees_subject(c, w.p1)  # noqa: E731
    asked_p2 = lambda c: w.sees_subject(c, w.p2)  # noqa: E731
    east = lambda c: c.org == EAST  # noqa: E731
    return [(w.vault["name"], in_p1), (w.vault["sha256"], in_p1), (w.p1.name, asked_p1),
            (w.p2.name, asked_p2), (w.arena["name"], east), (w.arena["sha256"], east)]


def echoes(probe: Probe, text: str) -> bool:
    """Whether the request itself carries ``text`` (a 404 may name what the caller asked for)."""
    return text in probe.path or text.encode() in probe.body


def rows_pattern(rows: int) -> re.Pattern[str]:
    return re.compile(rf'"rows"\s*:\s*{rows}\b|\|\s*{rows}\s*\|')


@pytest.fixture(scope="module")
def read_walk(world: World) -> list[tuple[Caller, Probe, httpx.Response]]:
    return [(c, p, world.send(c, p.method, p.path)) for p in read_probes(world) for c in world.callers]


# ---------------------------------------------------------------------------------------------- tests


def test_every_route_is_probed_or_listed_with_a_reason(world: World) -> None:
    spec = world.http.get("/openapi.json").json()
    routes = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    probed = {(p.method, p.route) for p in read_probes(world) + write_probes(world)}
    assert not probed & set(NOT_OBJECT_SCOPED)
    assert routes - probed - set(NOT_OBJECT_SCOPED) == set(), "route neither probed nor listed"
    assert probed | set(NOT_OBJECT_SCOPED) <= routes, "probe or listing of a route the hub does not have"


def test_reads_reach_participants_only(read_walk) -> None:
    denied = 0
    for caller, probe, response in read_walk:
        if probe.allowed(caller):
            (probe.check or expect_2xx)(caller, response)
        else:
            denied += 1
            expected = denied_status(caller, probe)
            assert response.status_code in expected, (caller.name, probe.path, response.text)
            if probe.route == "/api/models/{model_id}/files/{name}":
                assert "has no file" not in response.text
    assert denied > 100


def test_no_response_leaks_what_the_caller_may_not_see(world: World, read_walk) -> None:
    rows = rows_pattern(world.vault["rows"])
    for caller, probe, response in read_walk:
        for text, audience in secrets_of(world):
            if not audience(caller) and not echoes(probe, text):
                assert text not in response.text, (caller.name, probe.path, text)
        if not takes_part(caller, world.p1):
            assert not rows.search(response.text), (caller.name, probe.path)


def ledger_truth(db_url: str) -> list[LedgerEntry]:
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as session:
            return list(session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)))
    finally:
        engine.dispose()


MEMBER_EVENTS = {"hub.created", "hub.key", "org.key", "user.created", "org.proposed", "org.admitted",
                 "org.enrolment_token_issued", "node.enrolled", "policy.adopted", "credits.earned",
                 "credits.spent", "challenge.opened", "challenge.submitted"}


def audience(w: World, entry: LedgerEntry) -> Callable[[Caller], bool]:
    """Who may read an entry's payload, judged from the payload itself (not from the hub's stored scope)."""
    kind, payload = entry.event_type, entry.payload
    if kind in MEMBER_EVENTS:
        return lambda c: True
    if kind == "dataset.registered":
        return (lambda c: c.org == NORTH) if payload["dataset"] == f"{NORTH}/{w.vault['name']}" else member
    if kind == "environment.registered":
        return lambda c: c.org == EAST
    scenes = {s.id: s for s in w.scenes()}
    runs = {s.run_id: s for s in w.scenes()}
    if kind.startswith("proposal."):
        # a project's proposal, its votes and outcome are its participants' record (those asked to vote
        # read the proposal itself from /api/proposals); membership ones are every member's, as above
        project_id = (payload["subject"] if kind == "proposal.opened"
                      else {"project_id": w.ballot(payload["proposal_id"]).project_id}).get("project_id")
        if project_id is None:
            return lambda c: True
        return lambda c: takes_part(c, scenes[project_id])
    assert kind.split(".")[0] in ("project", "run", "round", "task"), f"unclassified ledger event {kind}"
    scene = scenes[payload["project_id"]] if "project_id" in payload else runs[payload["run_id"]]
    return lambda c: takes_part(c, scene)


def test_every_member_verifies_the_ledger_and_reads_only_its_own_payloads(world: World, read_walk) -> None:
    truth = ledger_truth(world.db_url)
    head = truth[-1].hash
    answers = {c.name: r for c, p, r in read_walk if p.route == "/api/ledger"}
    for caller in world.callers:
        response = answers[caller.name]
        if caller.anonymous:
            assert response.status_code == 401
            continue
        entries = response.json()
        report = verify_chain(ChainedEntry(**e) for e in entries)
        assert report.ok and report.checked == len(truth) and report.head_hash == head, (caller.name, report)
        for entry, shown in zip(truth, entries, strict=True):
            if audience(world, entry)(caller):
                assert (shown["payload"], shown["salt"]) == (entry.payload, entry.salt), caller.name
            else:
                assert (shown["payload"], shown["salt"]) == (None, None), (caller.name, entry.seq, shown)
                assert shown["payload_commitment"] == entry.payload_commitment


def test_writes_by_outsiders_are_refused_and_change_nothing(world: World) -> None:
    admin = next(c for c in world.callers if c.admin)
    before = world.send(admin, "GET", "/api/ledger?limit=10000").json()
    projects = world.send(admin, "GET", "/api/projects").json()
    proposals = world.send(admin, "GET", "/api/proposals").json()
    refused = 0
    for probe in write_probes(world):
        for caller in world.callers:
            if probe.allowed(caller):
                continue
            response = world.send(caller, probe.method, probe.path, probe.body, probe.content_type)
            expected = denied_status(caller, probe)
            assert response.status_code in expected, (caller.name, probe.path, response.text)
            for text, allowed in secrets_of(world):
                if not allowed(caller) and not echoes(probe, text):
                    assert text not in response.text, (caller.name, probe.path, text)
            refused += 1
    assert refused > 100
    after = world.send(admin, "GET", "/api/ledger?limit=10000").json()
    assert after[: len(before)] == before
    # The only trace an outsider leaves: an answer to another org's task is recorded as a security event.
    added = after[len(before):]
    assert {e["event_type"] for e in added} <= {"security.foreign_task"}, added
    assert all(e["actor"].startswith("org:") for e in added), added
    assert world.send(admin, "GET", "/api/projects").json() == projects
    assert world.send(admin, "GET", "/api/proposals").json() == proposals
