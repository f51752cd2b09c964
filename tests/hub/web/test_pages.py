"""The web pages in-process on SQLite and PostgreSQL: every page renders for the admin, a member and an
anonymous visitor, and shows what the API shows each of them; login and logout with CSRF; forbidden reads
as missing; user text is escaped."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from consortium.config import HubSettings
from consortium.hub.app import create_app
from consortium.hub.db.models import Dataset, Model, Org, Project, ProjectDataset, Run, User
from consortium.hub.services import identity, proposals
from consortium.hub.services.identity import Principal
from consortium.protocol import Role, UserCreate

ADMIN_TOKEN = "csm_" + "w" * 40
SCRIPT = "<script>alert('owned')</script>"
SCHEMA = {"features": [{"name": "px", "dtype": "float32", "shape": [4]}],
          "target": {"name": "label", "dtype": "int64"}}


@dataclass
class Site:
    app: object
    tokens: dict[str, str]
    project_id: int
    released_id: int
    trained_id: int

    def client(self, who: str | None = None) -> TestClient:
        """A browser: anonymous, or logged in as ``who`` through the login form."""
        client = TestClient(self.app, follow_redirects=False)
        if who is not None:
            response = log_in(client, self.tokens[who])
            assert response.status_code == 303, response.text
        return client


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def log_in(client: TestClient, token: str, next_page: str = "/") -> object:
    form = client.get("/login")
    return client.post("/login", data={"csrf": csrf_of(form.text), "token": token, "next": next_page})


def seed(app) -> tuple[dict[str, str], int, int, int]:
    """Orgs north and south; stewards alice (north) and bob (south); north's public digits (a script in
    its description), private secret and public cartpole environment, south's public data and members-only
    inner; a project of alice
    over digits and data (a script in its task) with a released public model and a trained one."""
    admin = Principal("user", "admin", Role.admin, None, None)
    with app.state.hub.sessions() as session:
        orgs = {name: Org(name=name, display_name=name.title(), status="admitted")
                for name in ("north", "south")}
        session.add_all(orgs.values())
        session.commit()
        tokens = {"admin": ADMIN_TOKEN}
        for user, org in (("alice", "north"), ("bob", "south")):
            body = UserCreate(name=user, role=Role.steward, org=org)
            tokens[user] = identity.create_user(session, admin, body)[1]
        sources = {
            ref: Dataset(org_id=orgs[ref.split("/")[0]].id, name=ref.split("/")[1], description=description,
                         schema=SCHEMA, rows=50, sha256="ab" * 32, license=licence, visibility=visibility,
                         file_format="csv")
            for ref, description, licence, visibility in (
                ("north/digits", f"handwritten digits {SCRIPT}", "CC-BY-4.0", "public"),
                ("north/secret", "the private one", "MIT", "private"),
                ("south/data", "south's rows", "MIT", "public"),
                ("south/inner", "members only", "MIT", "members"),
            )
        }
        sources["north/cartpole"] = Dataset(
            org_id=orgs["north"].id, name="cartpole", kind="environment", description="balance a pole",
            schema={"features": [{"name": "observation", "dtype": "float32", "shape": [4]}], "target": None},
            rows=0, sha256="cd" * 32, license="MIT", visibility="public", file_format="gymnasium",
            environment={"env_id": "CartPole-v1", "physics": None, "physics_salt": None})
        sources["north/digits"].privacy_epsilon, sources["north/digits"].privacy_delta = 3.0, 1e-5
        session.add_all(sources.values())
        spec = {"name": "pilot", "task": f"classify {SCRIPT}", "algorithm": {"name": "classifier"},
                "datasets": ["north/digits", "south/data"], "rounds": 2}
        project = Project(name="pilot", spec=spec, spec_hash="cd" * 32, proposer="user:alice")
        session.add(project)
        session.flush()
        session.add_all([ProjectDataset(project_id=project.id, dataset_id=sources[r].id)
                         for r in ("north/digits", "south/data")])
        proposals.propose_run(session, project, "user:alice")
        weights = app.state.hub.blobs.put(b"not really safetensors")
        models = []
        for version, status in ((1, "released"), (2, "trained")):
            run = Run(project_id=project.id, status="completed", params_sha256="ef" * 32)
            session.add(run)
            session.flush()
            card = {"model": f"pilot/run-{run.id}", "task": spec["task"], "algorithm": {"name": "classifier"},
                    "datasets": [{"ref": "north/digits", "license": "CC-BY-4.0"},
                                 {"ref": "north/secret", "license": "MIT"}], "license": "CC-BY-4.0",
                    "contributions": {"method": "leave_one_out", "metric": "accuracy",
                                      "rounds_valued": [1, 2], "values": {"north": 0.125, "south": -0.03}},
                    "obligations": {"attribution": ["north/digits"]},
                    "participating_orgs": ["north", "south"]}
            model = Model(run_id=run.id, project_id=project.id, params_sha256=weights, license="CC-BY-4.0",
                          card=card, card_markdown="", version=version, status=status,
                          visibility="public" if status == "released" else None,
                          released_at=datetime(2026, 5, 1, tzinfo=UTC) if status == "released" else None,
                          download_grant="everyone" if status == "released" else None)
            session.add(model)
            session.flush()
            models.append(model.id)
        session.commit()
        return tokens, project.id, models[0], models[1]


@pytest.fixture(scope="module")
def site(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data_dir: Path = tmp_path_factory.mktemp("web")
    app = create_app(HubSettings.from_args(module_db_url, data_dir, ADMIN_TOKEN))
    tokens, project_id, released, trained = seed(app)
    yield Site(app, tokens, project_id, released, trained)


def pages(site: Site) -> dict[str, dict[str | None, int]]:
    """Each page and the status it answers the admin, alice (north), bob (south) and anonymous (None)."""
    everyone = {"admin": 200, "alice": 200, "bob": 200, None: 200}
    logged_in = {"admin": 200, "alice": 200, "bob": 200, None: 303}
    participants = {"admin": 200, "alice": 200, "bob": 200, None: 404}
    return {
        "/": everyone, "/login": everyone, "/catalogue": everyone, "/models": everyone,
        "/catalogue?kind=dataset&licence=CC-BY-4.0&text=digi": everyone,
        "/catalogue?licence=No-Such-Licence&task=regression&open=open&sort=rows&start=10001": everyone,
        "/members": logged_in, "/projects": logged_in, "/challenges": logged_in,
        "/datasets/north/digits": everyone,
        "/datasets/north/digits/croissant.json": everyone,
        "/datasets/north/secret": {"admin": 404, "alice": 200, "bob": 404, None: 404},  # private: its owner
        "/datasets/south/inner": {"admin": 200, "alice": 200, "bob": 200, None: 404},  # members
        f"/projects/{site.project_id}": logged_in,
        f"/models/{site.released_id}": everyone,
        f"/models/{site.trained_id}": participants,
        f"/models/{site.released_id}/weights": participants,  # the data's download rights: nobody else
        f"/models/{site.trained_id}/weights": participants,
        "/models?status=trained": everyone,
    }


def api_twins(site: Site) -> dict[str, str]:
    """Pages and the API route that answers the same question."""
    twins = {f"/datasets/{ref}": f"/api/datasets/{ref}"
             for ref in ("north/digits", "north/secret", "south/inner")}
    for model in (site.released_id, site.trained_id):
        twins |= {f"/models/{model}": f"/api/models/{model}",
                  f"/models/{model}/weights": f"/api/models/{model}/weights"}
    return twins


@pytest.mark.parametrize("who", ["admin", "alice", "bob", None])
def test_every_page_renders_for_each_caller(site: Site, who: str | None) -> None:
    client = site.client(who)
    api = TestClient(site.app, headers={"Authorization": f"Bearer {site.tokens[who]}"} if who else {})
    for path, expected in pages(site).items():
        response = client.get(path)
        assert response.status_code == expected[who], (path, who, response.text[:500])
        if path in api_twins(site):
            assert api.get(api_twins(site)[path]).status_code == response.status_code, path
        if response.headers.get("content-type", "").startswith("text/html"):
            assert "<main id=\"main\"" in response.text and "Skip to content" in response.text
            assert response.headers["content-security-policy"].startswith("default-src 'self'")


def test_proposal_page_shows_votes_missing_and_is_hidden_from_outsiders(site: Site) -> None:
    project = site.client("alice").get(f"/projects/{site.project_id}").text
    proposal = re.search(r'href="/proposals/(\d+)"', project)
    path = f"/proposals/{proposal.group(1)}"
    shown = site.client("bob").get(path)
    assert shown.status_code == 200 and "Still missing" in shown.text and "north, south" in shown.text
    assert site.client(None).get(path).status_code == 303


def test_anonymous_visitor_sees_what_the_api_shows_anonymous_callers(site: Site) -> None:
    client = site.client(None)
    api = {f"/datasets/{c['org']}/{c['name']}" for c in client.get("/api/datasets").json()}
    shown = set(re.findall(r'href="(/datasets/[^"/]+/[^"/]+)"', client.get("/catalogue").text))
    assert shown == api == {"/datasets/north/digits", "/datasets/south/data"}
    api_models = {m["id"] for m in client.get("/api/models").json()}
    shown_models = {int(i) for i in re.findall(r'href="/models/(\d+)"', client.get("/models").text)}
    assert shown_models == api_models == {site.released_id}


def test_the_model_page_offers_the_weights_only_where_the_rights_allow(site: Site) -> None:
    path = f"/models/{site.released_id}"
    anonymous, alice = site.client(None).get(path).text, site.client("alice").get(path).text
    for html in (anonymous, alice):
        assert "Licence obligations" in html and "attribution" in html and "CC-BY-4.0" in html
    assert f'href="{path}/weights"' in alice and f'href="{path}/weights"' not in anonymous
    assert "do not include downloading" in anonymous


def test_a_forbidden_card_reads_exactly_as_a_missing_one(site: Site) -> None:
    client = site.client("bob")
    hidden = client.get("/datasets/north/secret")
    missing = client.get("/datasets/north/nothing")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text.replace("secret", "X") == missing.text.replace("nothing", "X")


@pytest.mark.parametrize("path", ["/models/0", "/models/abc", "/projects/99999999999", "/datasets/North/x"])
def test_a_malformed_address_is_a_404_page(site: Site, path: str) -> None:
    response = site.client("alice").get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html") and "Not found" in response.text


def test_user_text_is_escaped(site: Site) -> None:
    client = site.client("alice")
    for path in ("/datasets/north/digits", "/catalogue", f"/projects/{site.project_id}",
                 f"/models/{site.released_id}"):
        html = client.get(path).text
        assert "&lt;script&gt;alert(" in html, path
        assert "<script>" not in html, path


def test_login_sets_a_strict_httponly_cookie_without_the_token(site: Site) -> None:
    client = TestClient(site.app, follow_redirects=False)
    response = log_in(client, site.tokens["alice"], next_page="/members")
    assert response.status_code == 303 and response.headers["location"] == "/members"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and site.tokens["alice"] not in cookie
    assert "alice (north)" in client.get("/members").text


@pytest.mark.parametrize(("token", "status", "message"), [
    ("", 422, "Enter your API token."),
    ("csm_not-a-real-token", 401, "API token is not valid"),
    ("x" * 300, 422, "at most 200 characters"),
])
def test_a_bad_login_says_why_next_to_the_field_and_logs_nobody_in(site: Site, token: str, status: int,
                                                                   message: str) -> None:
    client = TestClient(site.app, follow_redirects=False)
    response = log_in(client, token)
    assert response.status_code == status
    assert 'id="token-error"' in response.text and message in response.text
    assert 'aria-describedby="token-error"' in response.text
    assert client.get("/members").status_code == 303


def test_an_open_redirect_after_login_goes_home(site: Site) -> None:
    client = TestClient(site.app, follow_redirects=False)
    assert log_in(client, site.tokens["alice"], next_page="//evil.example").headers["location"] == "/"


def test_posts_without_the_csrf_token_are_refused_and_change_nothing(site: Site) -> None:
    client = site.client("alice")
    sessions = len(site.app.state.hub.web)
    for data in ({}, {"csrf": "forged"}):
        assert client.post("/logout", data=data).status_code == 403
        assert client.get("/members").status_code == 200  # still logged in
        refused = client.post("/login", data={**data, "token": site.tokens["bob"]})
        assert refused.status_code == 403 and "CSRF" in refused.text
        assert "alice (north)" in client.get("/members").text  # not bob
    assert len(site.app.state.hub.web) == sessions


def test_logout_ends_the_session(site: Site) -> None:
    client = site.client("alice")
    cookie = client.cookies.get("consortium_session")
    home = client.get("/")
    assert client.post("/logout", data={"csrf": csrf_of(home.text)}).status_code == 303
    stale = TestClient(site.app, follow_redirects=False, cookies={"consortium_session": cookie})
    assert stale.get("/members").status_code == 303


def test_a_revoked_token_ends_its_sessions(site: Site) -> None:
    admin = Principal("user", "admin", Role.admin, None, None)
    with site.app.state.hub.sessions() as session:
        body = UserCreate(name="carol", role=Role.steward, org="south")
        _, token = identity.create_user(session, admin, body)
    client = TestClient(site.app, follow_redirects=False)
    assert log_in(client, token).status_code == 303
    assert client.get("/members").status_code == 200
    with site.app.state.hub.sessions() as session:
        session.query(User).filter(User.name == "carol").one().active = False
        session.commit()
    assert client.get("/members").status_code == 303


def test_the_catalogue_is_read_a_page_at_a_time_keeping_its_filters(site: Site, monkeypatch) -> None:
    from consortium.hub.web import catalogue

    monkeypatch.setattr(catalogue, "PAGE_SIZE", 2)
    client = site.client("alice")
    first = client.get("/catalogue?kind=dataset&sort=name").text
    assert dataset_links(first) == ["/datasets/south/data", "/datasets/north/digits"]
    assert "Datasets 1 to 2; more on the next page." in first and "Environments" not in first
    assert 'href="/catalogue?kind=dataset&amp;sort=name&amp;start=2" rel="next"' in first
    assert 'rel="prev"' not in first
    second = client.get("/catalogue?kind=dataset&sort=name&start=2").text
    assert dataset_links(second) == ["/datasets/south/inner", "/datasets/north/secret"]
    assert "Datasets 3 to 4." in second and 'rel="next"' not in second
    assert 'href="/catalogue?kind=dataset&amp;sort=name&amp;start=0" rel="prev"' in second


def dataset_links(html: str) -> list[str]:
    return re.findall(r'<tr><td><a href="(/datasets/[^"]+)"', html)


@pytest.mark.parametrize(("query", "who", "shown"), [
    ("text=HAND+dig", "alice", ["/datasets/north/digits"]),
    ("text=igits", "alice", []),  # a word's beginning, not its inside
    ("licence=MIT", "alice", ["/datasets/south/inner", "/datasets/south/data", "/datasets/north/secret"]),
    ("licence=cc-by-4.0", None, ["/datasets/north/digits"]),
    ("owner=south", "alice", ["/datasets/south/inner", "/datasets/south/data"]),
    ("owner=south", None, ["/datasets/south/data"]),
    ("task=classification&visibility=members", "bob", ["/datasets/south/inner"]),
    ("task=regression", "admin", []),
    ("visibility=private", "alice", ["/datasets/north/secret"]),
    ("visibility=private", "bob", []),
    ("visibility=members", None, []),
    ("open=open", "alice", []),
    ("open=federated&owner=north", "alice", ["/datasets/north/secret", "/datasets/north/digits"]),
])
def test_the_catalogue_filters_datasets_as_the_api_search_does(site: Site, query: str, who: str | None,
                                                                shown: list[str]) -> None:
    html = site.client(who).get(f"/catalogue?kind=dataset&{query}").text
    assert dataset_links(html) == shown, html
    api = TestClient(site.app, headers={"Authorization": f"Bearer {site.tokens[who]}"} if who else {})
    params = dict(p.split("=") for p in query.split("&"))
    params = {{"text": "q", "licence": "license"}.get(k, k): v.replace("+", " ") for k, v in params.items()}
    params["open"] = {"open": "true", "federated": "false"}.get(params.get("open"))
    items = api.get("/api/catalogue", params={k: v for k, v in params.items() if v}).json()["items"]
    assert [f"/datasets/{i['dataset']}" for i in items] == shown


def test_the_catalogue_shows_the_open_data_columns_and_says_why_a_search_is_refused(site: Site) -> None:
    client = site.client("alice")
    html = client.get("/catalogue?text=digits").text
    assert "<th scope=\"col\">Latest version</th>" in html and "federated only" in html
    assert "word prefixes" in html or "beginning of a word" in html
    refused = client.get("/catalogue?licence=No-Such-Licence")
    assert refused.status_code == 200 and 'role="alert"' in refused.text and "No-Such-Licence" in refused.text
    assert dataset_links(refused.text) == [] and 'aria-invalid="true"' in refused.text
    for query, said in (("task=poetry", "task"), ("open=maybe", "open"), ("visibility=secret", "visibility"),
                        ("sort=size", "sort"), ("kind=model", "kind"), ("start=10001", "offset")):
        answer = client.get(f"/catalogue?{query}")
        assert answer.status_code == 200 and re.search(rf'role="alert">{said}\b', answer.text), query


def test_environments_are_listed_beside_the_datasets_with_the_same_filters(site: Site) -> None:
    client = site.client(None)
    links = lambda query: re.findall(r'href="(/environments/[^"]+)"', client.get(f"/catalogue?{query}").text)  # noqa: E731
    assert links("") == links("kind=environment") == links("text=POLE&licence=MIT&owner=north") == [
        "/environments/north/cartpole"]
    assert links("kind=dataset") == links("text=ole") == links("task=regression") == links("open=open") == []
    assert links("visibility=members") == links("licence=Apache-2.0") == links("start=100") == []
    html = client.get("/catalogue?kind=environment").text
    assert dataset_links(html) == [] and "Datasets" not in html


def test_the_owner_choices_are_the_orgs_with_cards_the_caller_may_see(site: Site) -> None:
    options = lambda who: re.findall(r"<option(?: selected)?>(\w+)</option>",  # noqa: E731
                                     site.client(who).get("/catalogue").text.split('id="f-owner"')[1]
                                     .split("</select>")[0])
    assert options(None) == options("alice") == ["north", "south"]


def test_the_projects_list_says_what_the_api_says_of_owners_and_votes(site: Site) -> None:
    from consortium.hub.services import projects as project_service
    from consortium.hub.services.access import visible_projects

    with site.app.state.hub.sessions() as session:
        who = identity.authenticate_token(session, site.tokens["alice"])
        found = visible_projects(session, who)
        full = [project_service.to_out(session, p) for p in found]
        summaries = project_service.summaries(session, found)
        assert [(s.id, s.required_orgs, s.approved_orgs) for s in summaries] == [
            (p.id, p.required_orgs, p.approved_orgs) for p in full]


@pytest.mark.parametrize("who", ["admin", "alice", "bob", None])
def test_catalogue_lines_keep_exactly_the_cards_the_api_lists(site: Site, who: str | None) -> None:
    from consortium.hub.services import datasets as dataset_service

    with site.app.state.hub.sessions() as session:
        caller = identity.authenticate_token(session, site.tokens[who]) if who else None
        lines = dataset_service.visible_lines(session, caller, (dataset_service.TABLE,))
        assert [(line.org, line.name) for line in lines] == [
            (d.org.name, d.name) for d in dataset_service.listing(session, caller)]


@pytest.mark.parametrize("who", ["admin", "bob", None])
def test_the_overview_counts_the_cards_the_api_lists(site: Site, who: str | None) -> None:
    from consortium.hub.services import datasets as dataset_service

    with site.app.state.hub.sessions() as session:
        caller = identity.authenticate_token(session, site.tokens[who]) if who else None
        assert dataset_service.visible_count(session, caller, dataset_service.TABLE) == len(
            dataset_service.listing(session, caller))


def lineage_links(html: str) -> set[str]:
    svg = html[html.index('<svg role="img" aria-labelledby="lineage"'):]
    return set(re.findall(r'<a href="([^"]+)">', svg[:svg.index("</svg>")]))


@pytest.mark.parametrize(("who", "links"), [
    (None, {"/datasets/north/digits", "/models/{released}"}),
    ("bob", {"/datasets/north/digits", "/projects/{project}", "/runs/{run1}", "/runs/{run2}",
             "/models/{released}", "/models/{trained}"}),
    ("alice", {"/datasets/north/digits", "/datasets/north/secret", "/projects/{project}", "/runs/{run1}",
               "/runs/{run2}", "/models/{released}", "/models/{trained}"}),
])
def test_the_lineage_links_only_the_pages_the_viewer_may_open(site: Site, who: str | None,
                                                             links: set) -> None:
    with site.app.state.hub.sessions() as session:
        runs = {f"run{i}": session.get(Model, m).run_id
                for i, m in ((1, site.released_id), (2, site.trained_id))}
    html = site.client(who).get(f"/models/{site.released_id}").text
    ids = {"released": site.released_id, "trained": site.trained_id, "project": site.project_id, **runs}
    expected = {link.format(**ids) for link in links}
    assert lineage_links(html) == expected
    for path in expected:
        assert site.client(who).get(path).status_code == 200, path
    assert "north/secret" in html and "Release of v1" in html and "public 2026-05-01" in html


def test_the_model_page_shows_each_org_contribution(site: Site) -> None:
    html = site.client(None).get(f"/models/{site.released_id}").text
    assert "Measured by leave_one_out on the test accuracy, summed over rounds 1, 2." in html
    assert "<tr><td>north</td><td>0.125</td></tr>" in html and "<tr><td>south</td><td>-0.03</td></tr>" in html


def test_a_dataset_card_shows_its_privacy_budget_spent_and_left(site: Site) -> None:
    html = site.client(None).get("/datasets/north/digits").text
    assert "Privacy budget" in html and "ε = 3 at δ = 1e-05" in html
    assert "<dt>Spent</dt><dd>ε = 0</dd>" in html and "<dt>Left</dt><dd>ε = 3</dd>" in html
    assert "Privacy budget" not in site.client(None).get("/datasets/south/data").text
