"""The forms that change things and the ledger explorer, in-process on SQLite and PostgreSQL: a project
proposed through the form, an owner's rights change, a vote signed with the org's key; every bad input gets
its message next to its field and changes nothing; the explorer hides what the API hides; unknown
addresses answer 401 JSON to anonymous callers and a 404 page to logged-in ones."""

from __future__ import annotations

import itertools
import re
from html import unescape
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from starlette.testclient import TestClient

from consortium import crypto
from consortium.config import HubSettings
from consortium.governance import statements
from consortium.hub.app import create_app
from consortium.hub.db.models import Dataset, LedgerEntry, Org, OrgKey, Project, Vote
from consortium.hub.services import hub_identity, identity, ledger, proposals
from consortium.hub.services.identity import Principal
from consortium.protocol import ProjectCreate, Role, UserCreate

ADMIN_TOKEN = "csm_" + "f" * 40
SCHEMA = {"features": [{"name": "px", "dtype": "float32", "shape": [4]}],
          "target": {"name": "label", "dtype": "int64"}}
GOOD_PROJECT = {"name": "from-the-form", "task": "classify", "datasets": "north/digits, south/data",
                "algorithm": "classifier", "hyperparameters": '{"layers": [4, 8, 2]}', "strategy": "", "rounds": "3",
                "min_nodes": "", "round_timeout": "", "validation_fraction": "", "seed": ""}


@dataclass
class Site:
    app: object
    tokens: dict[str, str]
    keys: dict[str, crypto.OrgIdentity]
    proposal_id: int

    def client(self, who: str | None = None) -> TestClient:
        client = TestClient(self.app, follow_redirects=False)
        if who is not None:
            form = client.get("/login")
            answer = client.post("/login", data={"csrf": csrf_of(form.text), "token": self.tokens[who]})
            assert answer.status_code == 303, answer.text
        return client

    def count(self, model) -> int:
        with self.app.state.hub.sessions() as session:
            return session.scalar(select(func.count()).select_from(model))

    def changes(self) -> tuple[int, int, int]:
        """What a refused form must leave alone: ledger length, projects, votes."""
        return self.count(LedgerEntry), self.count(Project), self.count(Vote)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def seed(app) -> tuple[dict[str, str], dict[str, crypto.OrgIdentity], int]:
    """Orgs north, south (with keys) and west; stewards alice (north), bob (south), carol (west); north's
    public digits, south's public data; a project of alice over both with its open proposal."""
    admin = Principal("user", "admin", Role.admin, None, None)
    keys = {name: crypto.OrgIdentity.from_private_key(name, Ed25519PrivateKey.generate())
            for name in ("north", "south", "west")}
    with app.state.hub.sessions() as session:
        orgs = {name: Org(name=name, display_name=name.title(), status="admitted",
                          public_key=keys[name].public_key_b64, key_id=keys[name].key_id) for name in keys}
        session.add_all(orgs.values())
        session.flush()
        session.add_all([OrgKey(org_id=org.id, key_id=org.key_id, public_key=org.public_key)
                         for org in orgs.values()])
        session.commit()
        tokens = {"admin": ADMIN_TOKEN}
        for user, org in (("alice", "north"), ("bob", "south"), ("carol", "west")):
            tokens[user] = identity.create_user(session, admin, UserCreate(name=user, role=Role.steward,
                                                                           org=org))[1]
        for org, name in (("north", "digits"), ("south", "data")):
            source = Dataset(org_id=orgs[org].id, name=name, description="", schema=SCHEMA, rows=50,
                             sha256="ab" * 32, license="MIT", visibility="public", file_format="csv")
            session.add(source)
            session.flush()
            ledger.record(session, "dataset.registered", f"org:{org}", {"ref": f"{org}/{name}"},
                          scope=ledger.source_scope(source.id))
        session.commit()
    alice = Principal("user", "alice", Role.steward, orgs["north"].id, "north")
    with app.state.hub.sessions() as session:
        from consortium.hub.services import projects as project_service
        spec = ProjectCreate(name="pilot", task="t", algorithm={"name": "classifier", "hyperparameters": {"layers": [4, 8, 2]}},
                             datasets=["north/digits", "south/data"], rounds=2)
        project = project_service.create(session, alice, spec)
        proposal_id = proposals.project_proposal(session, project).id
    return tokens, keys, proposal_id


@pytest.fixture(scope="module")
def site(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data_dir: Path = tmp_path_factory.mktemp("web-forms")
    app = create_app(HubSettings.from_args(module_db_url, data_dir, ADMIN_TOKEN))
    tokens, keys, proposal_id = seed(app)
    yield Site(app, tokens, keys, proposal_id)


def post_form(client: TestClient, page: str, action: str, fields: dict[str, str]):
    return client.post(action, data={"csrf": csrf_of(client.get(page).text), **fields})


def error_of(html: str, element_id: str) -> str:
    """The text of the problem shown next to the field ``element_id`` ("" when none is)."""
    found = re.search(rf'<p id="{element_id}-error" class="error" role="alert"[^>]*>([^<]*)</p>', html)
    return unescape(found.group(1)) if found else ""


# ------------------------------------------------------------------------------------------ propose


def test_a_project_proposed_through_the_form_is_the_apis(site: Site) -> None:
    client = site.client("alice")
    answer = post_form(client, "/projects/new", "/projects/new", GOOD_PROJECT)
    assert answer.status_code == 303, error_of(answer.text, "p-datasets") or answer.text[-2000:]
    page = client.get(answer.headers["location"])
    assert page.status_code == 200 and "from-the-form" in page.text
    api = TestClient(site.app, headers={"Authorization": f"Bearer {site.tokens['alice']}"})
    made = [p for p in api.get("/api/projects").json() if p["name"] == "from-the-form"][0]
    assert made["spec"]["datasets"] == ["north/digits", "south/data"] and made["spec"]["rounds"] == 3


@pytest.mark.parametrize(("field", "value", "message"), [
    ("name", "", "String should match pattern"),
    ("name", "Not A Name", "String should match pattern"),
    ("name", "pilot", "project 'pilot' already exists"),
    ("rounds", "", "Field required"),
    ("rounds", "three", "Input should be a valid integer"),
    ("rounds", "0", "Input should be greater than or equal to 1"),
    ("seed", "-1", "Input should be greater than or equal to 0"),
    ("validation_fraction", "1.5", "Input should be less than 1"),
    ("round_timeout", "nan", "Input should be a finite number"),
    ("hyperparameters", "{", "not valid JSON"),
    ("hyperparameters", "[1]", "a JSON object"),
    ("datasets", "", "a project names at least one dataset"),
    ("datasets", "digits", "must look like 'org/dataset'"),
    ("datasets", "north/nothing", "no dataset 'north/nothing'"),
    ("algorithm", "", "String should have at least 1 character"),
    ("task", "x" * 2001, "String should have at most 2000 characters"),
    ("task", "x" * 4001, "at most 4000 characters"),
])
def test_a_bad_project_form_says_why_next_to_the_field_and_changes_nothing(
        site: Site, field: str, value: str, message: str) -> None:
    before = site.changes()
    answer = post_form(site.client("alice"), "/projects/new", "/projects/new", {**GOOD_PROJECT, "name": "other",
                                                                                 field: value})
    assert answer.status_code in (409, 422)
    assert message in error_of(answer.text, f"p-{field}")
    assert f'aria-describedby="p-{field}-error"' in answer.text or field == "hyperparameters"
    assert site.changes() == before


# ------------------------------------------------------------------------------------------ rights


def test_the_owner_changes_visibility_and_rights_and_the_ledger_records_it(site: Site) -> None:
    client = site.client("bob")
    page = client.get("/datasets/south/data")
    assert "Change visibility and rights" in page.text
    answer = post_form(client, "/datasets/south/data", "/datasets/south/data/rights",
                       {"visibility": "members", "process": "north", "download": "nobody"})
    assert answer.status_code == 303
    card = TestClient(site.app, headers={"Authorization": f"Bearer {site.tokens['bob']}"}).get(
        "/api/datasets/south/data").json()
    assert (card["visibility"], card["process"], card["download"]) == ("members", ["north"], "nobody")
    assert "The rights were changed" in client.get(answer.headers["location"]).text
    with site.app.state.hub.sessions() as session:
        assert session.scalar(select(LedgerEntry.event_type).order_by(LedgerEntry.seq.desc()).limit(1)) == \
            "source.rights_changed"


def test_only_the_owner_gets_the_rights_form_and_others_hear_the_card_is_missing(site: Site) -> None:
    client = site.client("alice")
    assert "Change visibility and rights" not in client.get("/datasets/south/data").text
    before = site.changes()
    answer = post_form(client, "/datasets/north/digits", "/datasets/south/data/rights", {"visibility": "public"})
    assert answer.status_code == 404 and "no dataset 'south/data'" in unescape(answer.text)
    assert site.changes() == before


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"visibility": "secret"}, "visibility", "Input should be 'private', 'members' or 'public'"),
    ({"process": "everyone"}, "process", "'everyone' is only for download"),
    ({"download": "ghost-org"}, "download", "no organisation named 'ghost-org'"),
    ({"download": "Not An Org"}, "download", "String should match pattern"),
    ({"download": "members, members"}, "download", "members"),
    ({}, "visibility", "give at least one of visibility, process, download"),
    ({"process": "x" * 4001}, "process", "at most 4000 characters"),
])
def test_a_bad_rights_form_says_why_next_to_the_field_and_changes_nothing(
        site: Site, fields: dict, field: str, message: str) -> None:
    before = site.changes()
    body = {"visibility": "", "process": "", "download": "", **fields}
    answer = post_form(site.client("alice"), "/datasets/north/digits", "/datasets/north/digits/rights", body)
    assert answer.status_code == 422
    assert message in error_of(answer.text, f"r-{field}"), answer.text[-3000:]
    assert site.changes() == before


# ------------------------------------------------------------------------------------------ votes


def sign_vote(site: Site, org: str, choice: str, reason: str, key: crypto.OrgIdentity | None = None) -> dict:
    with site.app.state.hub.sessions() as session:
        hub_id = hub_identity.hub_id(session)
        content_hash = proposals.visible(session, Principal("user", "admin", Role.admin, None, None),
                                         site.proposal_id).content_hash
    statement = statements.vote_statement(hub_id=hub_id, proposal_id=site.proposal_id, content_hash=content_hash,
                                          org=org, choice=choice, reason=reason)
    signature = (key or site.keys[org]).sign(statements.vote_message(statement))
    return {"choice": choice, "reason": reason, "content_hash": content_hash, "signature": signature}


def test_the_vote_form_carries_what_the_page_signs(site: Site) -> None:
    html = site.client("bob").get(f"/proposals/{site.proposal_id}").text
    assert 'id="vote-form"' in html and 'src="/static/sign.js"' in html
    assert f'data-public-key="{site.keys["south"].public_key_b64}"' in html
    assert 'id="vote-key" type="file"' in html and 'name="key' not in html  # the key file is never posted
    assert 'id="vote-form"' not in site.client("admin").get(f"/proposals/{site.proposal_id}").text


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"signature": ""}, "vote-key", "no signature: load your organisation's key file"),
    ({"choice": "maybe"}, "vote-choice", "String should match pattern"),
    ({"reason": "y" * 2001}, "vote-reason", "String should have at most 2000 characters"),
    ({"key": "west"}, "vote-key", "signature: not a valid signature".partition(": ")[2]),
    ({"reason": "changed after signing"}, "vote-key", "not a valid signature of this vote statement"),
])
def test_a_bad_vote_is_refused_next_to_its_field_and_changes_nothing(
        site: Site, change: dict, field: str, message: str) -> None:
    before = site.changes()
    change = dict(change)  # the parameter is shared by both backends' runs: pop from a copy
    signed = sign_vote(site, "south", "yes", "", key=site.keys[change.pop("key")] if "key" in change else None)
    client = site.client("bob")
    answer = post_form(client, f"/proposals/{site.proposal_id}", f"/proposals/{site.proposal_id}/vote",
                       {**signed, **change})
    assert answer.status_code == 422
    assert message in error_of(answer.text, field), answer.text[-3000:]
    assert site.changes() == before


def test_a_vote_signed_with_the_org_key_is_recorded_and_shown_verified(site: Site) -> None:
    client = site.client("bob")
    answer = post_form(client, f"/proposals/{site.proposal_id}", f"/proposals/{site.proposal_id}/vote",
                       sign_vote(site, "south", "yes", "fine <b>by</b> us"))
    assert answer.status_code == 303
    html = client.get(answer.headers["location"]).text
    assert re.search(r'<td>south</td><td>yes</td><td>yes</td><td class="ok">verified</td>', html)
    assert "fine &lt;b&gt;by&lt;/b&gt; us" in html


# ------------------------------------------------------------------------------------------ ledger


def test_the_explorer_redacts_what_the_api_redacts(site: Site) -> None:
    for who in ("alice", "carol"):
        api = TestClient(site.app, headers={"Authorization": f"Bearer {site.tokens[who]}"}).get(
            "/api/ledger").json()
        feed = site.client(who).get("/ledger/feed.json").json()
        assert feed == api
        html = site.client(who).get("/ledger?event_type=project.proposed").text
        assert ('<span class="muted">redacted</span>' in html) == (who == "carol")
        assert ("from-the-form" in html or "pilot" in html) == (who == "alice")
    assert any(e["payload"] is None for e in feed)


def test_the_explorer_filters_and_pages(site: Site) -> None:
    client = site.client("alice")
    html = client.get("/ledger?event_type=dataset.registered").text
    assert re.findall(r"<code>([a-z.]+)</code></td>", html) == ["dataset.registered"] * 2
    html = client.get("/ledger?actor=org:south").text
    assert set(re.findall(r"<td>(org:[a-z]+|user:[a-z]+|hub)</td>", html)) == {"org:south"}
    with site.app.state.hub.sessions() as session:
        pilot = session.scalar(select(Project.id).where(Project.name == "pilot"))
    html = client.get(f"/ledger?project={pilot}").text
    assert set(re.findall(r"<code>([a-z_.]+)</code></td>", html)) >= {"project.proposed"}
    assert "dataset.registered" not in re.findall(r"<code>([a-z_.]+)</code></td>", html)
    today = client.get("/ledger").text
    days = set(re.findall(r'<td class="nowrap">(\d{4}-\d\d-\d\d)', today))
    assert len(client.get(f"/ledger?since={min(days)}&until={max(days)}").text) > 0
    assert "No entry matches." in client.get("/ledger?until=2000-01-01").text
    seqs = [int(s) for s in re.findall(r'<tr data-seq="(\d+)">', client.get("/ledger").text)]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) <= 50


@pytest.mark.parametrize(("query", "field", "message"), [
    ("project=abc", "f-project", "a project id"),
    ("project=99999", "f-project", "no project 99999"),
    ("since=yesterday", "f-since", "a date as YYYY-MM-DD"),
    ("since=2026-02-01&until=2026-01-01", "f-until", "must not be before the first day"),
    ("actor=" + "a" * 101, "f-actor", "at most 100"),
    ("event_type=%3Cscript%3E", "f-event_type", "letters, digits"),
])
def test_bad_filters_are_named_next_to_their_field(site: Site, query: str, field: str, message: str) -> None:
    answer = site.client("alice").get(f"/ledger?{query}")
    assert answer.status_code == 422
    assert message in error_of(answer.text, field)


def test_a_project_the_caller_may_not_see_reads_as_missing_in_the_filter(site: Site) -> None:
    with site.app.state.hub.sessions() as session:
        pilot = session.scalar(select(Project.id).where(Project.name == "pilot"))
    answer = site.client("carol").get(f"/ledger?project={pilot}")
    assert answer.status_code == 422 and f"no project {pilot}" in error_of(answer.text, "f-project")


def test_an_entry_page_shows_its_proof_and_redacts_like_the_api(site: Site) -> None:
    with site.app.state.hub.sessions() as session:
        from consortium.hub.services import checkpoints
        from datetime import UTC, datetime
        checkpoints.maybe_checkpoint(session, datetime.now(UTC), 1, 0.0, force=True)
        seq = session.scalar(select(LedgerEntry.seq).where(LedgerEntry.event_type == "project.proposed"))
    carol, alice = site.client("carol").get(f"/ledger/{seq}").text, site.client("alice").get(f"/ledger/{seq}").text
    assert "<p>Redacted:" in carol and "<p>Redacted:" not in alice, carol[-3000:]
    assert "&#34;project_id&#34;" in alice
    assert 'id="inclusion"' in carol and "Merkle inclusion proof" in carol
    assert site.client("alice").get("/ledger/99999").status_code == 404
    assert site.client(None).get(f"/ledger/{seq}").status_code == 303
    assert site.client(None).get("/ledger/feed.json").status_code == 401


# ------------------------------------------------------------------------------------------ addresses


@pytest.mark.parametrize("path", ["/nope", "/web/nope", "/ledger/x/y"])
def test_unknown_addresses_answer_401_json_to_anonymous_callers_and_a_404_page_when_logged_in(
        site: Site, path: str) -> None:
    anonymous = site.client(None).get(path)
    assert anonymous.status_code == 401 and anonymous.headers["content-type"] == "application/json"
    logged_in = site.client("alice").get(path)
    assert logged_in.status_code == 404 and logged_in.headers["content-type"].startswith("text/html")
    assert f"no page {path}" in logged_in.text and "Log out" in logged_in.text
    assert site.client("alice").get("/api/nope").status_code == 401  # the API still needs credentials


# ------------------------------------------------------------------------------------------ markup

PAYLOADS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "'><svg onload=alert(1)>")
MARKUP = ("<script>alert(1)", "<img src=x", "<svg onload")


def forms(site: Site) -> list[tuple[str, str, str, str, dict[str, str]]]:
    """Each form as (user, page it is on, method, action, its fields with good values)."""
    proposal = f"/proposals/{site.proposal_id}"
    vote = sign_vote(site, "west", "abstain", "")
    return [
        ("", "/login", "post", "/login", {"token": "csm_x", "next": "/"}),
        ("alice", "/ledger", "get", "/ledger",
         {"event_type": "", "actor": "", "project": "", "since": "", "until": ""}),
        ("alice", "/catalogue", "get", "/catalogue",
         {"text": "", "licence": "", "owner": "", "task": "", "open": "", "visibility": "", "kind": "",
          "sort": "", "start": "0"}),
        ("alice", "/models", "get", "/models", {"project": "", "status": "", "licence": "", "org": ""}),
        ("alice", "/projects/new", "post", "/projects/new", dict(GOOD_PROJECT)),
        ("alice", "/datasets/north/digits", "post", "/datasets/north/digits/rights",
         {"visibility": "public", "process": "members", "download": "nobody"}),
        ("carol", proposal, "post", f"{proposal}/vote", vote),
    ]


def test_markup_in_any_field_of_any_form_comes_back_escaped(site: Site) -> None:
    clients = {who: site.client(who or None) for who in ("", "alice", "carol")}
    counter = itertools.count()
    for who, page, method, action, fields in forms(site):
        client = clients[who]
        for name, payload in itertools.product(fields, PAYLOADS):
            body = {**fields, name: payload}
            if action == "/projects/new" and name != "name":
                body["name"] = f"inj-{next(counter)}"
            if method == "get":
                answer = client.get(action, params=body)
            else:
                answer = client.post(action, data={"csrf": csrf_of(client.get(page).text), **body})
            shown = [answer.text]
            if answer.status_code == 303:
                shown.append(client.get(answer.headers["location"]).text)
            assert answer.status_code < 500, (action, name)
            for html, markup in itertools.product(shown, MARKUP):
                assert markup not in html, (action, name, payload)
    assert any(p["task"] == PAYLOADS[0] for p in TestClient(
        site.app, headers={"Authorization": f"Bearer {site.tokens['alice']}"}).get("/api/projects").json()
        for p in [p["spec"]])  # a stored payload was rendered too, not only refused ones


def test_templates_load_scripts_only_from_the_hubs_static_files_and_inline_none() -> None:
    templates = Path(create_app.__code__.co_filename).parent / "web" / "templates"
    text = "\n".join(p.read_text() for p in templates.glob("*.html"))
    tags = re.findall(r"<script\b[^>]*>", text)
    assert tags and all(re.fullmatch(r'<script src="/static/[a-z]+\.js" defer>', tag) for tag in tags)
    assert not re.search(r"\son[a-z]+=", text) and "javascript:" not in text


def test_the_scripts_are_served_as_javascript_and_nothing_else_is(site: Site) -> None:
    client = site.client(None)
    for name in ("ledger", "sign"):
        answer = client.get(f"/static/{name}.js")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/nope.js").status_code == 404
    assert client.get("/static/..%2Fledger.py.js").status_code in (401, 404)  # a name, never a path
