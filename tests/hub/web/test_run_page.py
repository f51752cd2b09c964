"""The run page and its event stream in-process: curves and tables rendered on the server, the stream's
events for a finished run, the same 404 as the progress API for outsiders, and the start-run form's
refusals (CSRF, not the proposer, not yet approved) shown as pages with the service's reason."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from consortium.config import HubSettings
from consortium.hub.app import create_app
from consortium.hub.db.models import Dataset, Org, Project, ProjectDataset, Round, Run, Task
from consortium.hub.services import identity, proposals
from consortium.hub.services.identity import Principal
from consortium.hub.state import progress_key
from consortium.hub.web import runs as run_pages
from consortium.protocol import Role, RoundMetrics, UserCreate

ADMIN_TOKEN = "csm_" + "r" * 40
SCHEMA = {"features": [{"name": "px", "dtype": "float32", "shape": [4]}],
          "target": {"name": "label", "dtype": "int64"}}
ROUNDS = 3


@dataclass
class World:
    app: object
    tokens: dict[str, str]
    project_id: int
    run_id: int

    def client(self, who: str | None = None) -> TestClient:
        client = TestClient(self.app, follow_redirects=False)
        if who is not None:
            form = client.get("/login")
            response = client.post("/login", data={"csrf": csrf_of(form.text), "token": self.tokens[who]})
            assert response.status_code == 303, response.text
        return client


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def round_metrics(number: int) -> dict:
    return RoundMetrics(
        round=number, participants=["north", "south"], dropped=[], train={"train_loss": 1.0 / number},
        federated_eval={"accuracy": 0.5 + number / 10},
        test={"accuracy": 0.6 + number / 10, "loss": 2.0 / number},
        params_sha256="ab" * 32, opened_at=1.7e9 + number, wall_s=0.25 * number,
        federated_eval_pending=number == ROUNDS, max_fit_compute_s=0.1, max_eval_compute_s=0.1,
    ).model_dump(mode="json")


def seed(app) -> tuple[dict[str, str], int, int]:
    """Orgs north, south and east; a project of alice (north) over north's and south's data, not open to
    east; its finished three-round run, where south refused one task and the hub rejected one of north's."""
    admin = Principal("user", "admin", Role.admin, None, None)
    with app.state.hub.sessions() as session:
        orgs = {name: Org(name=name, display_name=name.title(), status="admitted")
                for name in ("north", "south", "east")}
        session.add_all(orgs.values())
        session.commit()
        tokens = {"admin": ADMIN_TOKEN}
        for user, org in (("alice", "north"), ("bob", "south"), ("carol", "east")):
            tokens[user] = identity.create_user(session, admin, UserCreate(name=user, role=Role.steward,
                                                                           org=org))[1]
        sources = [Dataset(org_id=orgs[org].id, name="data", description="", schema=SCHEMA, rows=50,
                           sha256="ab" * 32, license="MIT", visibility="private", file_format="csv")
                   for org in ("north", "south")]
        session.add_all(sources)
        spec = {"name": "pilot", "task": "classify", "algorithm": {"name": "classifier"},
                "datasets": ["north/data", "south/data"], "rounds": ROUNDS}
        project = Project(name="pilot", spec=spec, spec_hash="cd" * 32, proposer="user:alice")
        session.add(project)
        session.flush()
        session.add_all([ProjectDataset(project_id=project.id, dataset_id=s.id) for s in sources])
        proposals.propose_run(session, project, "user:alice")
        run = Run(project_id=project.id, status="completed", current_round=ROUNDS, params_sha256="ef" * 32)
        session.add(run)
        session.flush()
        when = datetime(2026, 12, 3, tzinfo=UTC)
        for number in range(1, ROUNDS + 1):
            row = Round(run_id=run.id, number=number, status="closed", metrics=round_metrics(number))
            session.add(row)
            session.flush()
            for source in sources:
                refused = number == 2 and source is sources[1]
                rejected = number == 3 and source is sources[0]
                status, error = ("refused", "policy: no <b>nights</b>") if refused else (
                    ("rejected", "update has NaN") if rejected else ("done", None))
                session.add(Task(run_id=run.id, round_id=row.id, org_id=source.org_id, dataset_id=source.id,
                                 kind="fit", status=status, seed=number, deadline=when, error=error))
        session.commit()
        return tokens, project.id, run.id


@pytest.fixture(scope="module")
def world(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir: Path = tmp_path_factory.mktemp("runpage")
    app = create_app(HubSettings.from_args(module_db_url, data_dir, ADMIN_TOKEN))
    tokens, project_id, run_id = seed(app)
    yield World(app, tokens, project_id, run_id)


def events(text: str) -> list[tuple[str, str]]:
    """The (event, data) pairs of a server-sent event stream."""
    found = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":")
        if "event" in fields:
            found.append((fields["event"], fields["data"]))
    return found


def test_the_run_page_draws_every_curve_and_lists_nodes_and_refusals(world: World) -> None:
    response = world.client("alice").get(f"/runs/{world.run_id}")
    assert response.status_code == 200, response.text
    html = response.text
    for key in ("test.accuracy", "test.loss", "federated_eval.accuracy", "train.train_loss", "wall_s"):
        assert f'data-key="{key}"' in html
    assert html.count("<polyline") == 5 and html.count('<tr data-round="') == ROUNDS
    federated = re.search(r'data-key="federated_eval.accuracy".*?points="([^"]+)"', html, re.DOTALL).group(1)
    assert len(federated.split()) == ROUNDS - 1  # the last round's arrives with the final evaluation
    assert "south, round 2 (fit): refused: policy: no &lt;b&gt;nights&lt;/b&gt;" in html
    assert "north, round 3 (fit): rejected: update has NaN" in html
    assert '<script src="/static/run.js" defer></script>' in html and "<script>" not in html
    assert response.headers["content-security-policy"].count("script-src 'self';") == 1


def test_the_page_links_the_run_from_its_project(world: World) -> None:
    html = world.client("bob").get(f"/projects/{world.project_id}").text
    assert f'href="/runs/{world.run_id}"' in html


def test_the_script_is_served_from_the_hub_without_a_session(world: World) -> None:
    response = TestClient(world.app).get("/static/run.js")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/javascript")
    script = response.text
    assert "EventSource" in script and "eval(" not in script and "innerHTML" not in script


def test_the_event_stream_of_a_finished_run_sends_its_rounds_then_ends(world: World) -> None:
    response = world.client("bob").get(f"/runs/{world.run_id}/events")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    found = events(response.text)
    assert [name for name, _ in found] == ["round"] * ROUNDS + ["nodes", "run", "end"]
    assert '"status":"completed"' in found[-2][1] and '"refused":1' in found[ROUNDS][1]


def test_a_stream_resumes_after_the_last_event_id(world: World) -> None:
    client = world.client("alice")
    resumed = events(client.get(f"/runs/{world.run_id}/events", headers={"Last-Event-ID": "2"}).text)
    assert [name for name, _ in resumed] == ["round", "nodes", "run", "end"]
    assert resumed[0][1].startswith('{"round":3')


@pytest.mark.parametrize("path", ["/runs/{run}", "/runs/{run}/events"])
def test_an_outsider_gets_the_same_404_as_from_the_progress_api(world: World, path: str) -> None:
    page = world.client("carol").get(path.format(run=world.run_id))
    api = TestClient(world.app, headers={"Authorization": f"Bearer {world.tokens['carol']}"})
    assert api.get(f"/api/runs/{world.run_id}/progress").status_code == 404
    assert page.status_code == 404 and "no run" in page.text
    assert world.client("carol").get(path.format(run=999999)).status_code == 404


def test_anonymous_visitors_are_sent_to_log_in_and_the_stream_says_401(world: World) -> None:
    anonymous = TestClient(world.app, follow_redirects=False)
    assert anonymous.get(f"/runs/{world.run_id}").status_code == 303
    assert anonymous.get(f"/runs/{world.run_id}/events").status_code == 401


def test_resume_point_waits_for_the_pending_federated_evaluation() -> None:
    rounds = [round_metrics(n) for n in range(1, ROUNDS + 1)]
    assert run_pages.resume_point(rounds) == ROUNDS - 1
    assert run_pages.resume_point(rounds[:-1]) == ROUNDS - 1
    assert run_pages.resume_point([]) == 0


@pytest.mark.parametrize(("who", "with_csrf", "status", "message"), [
    ("alice", False, 403, "CSRF"),
    ("bob", True, 403, "only the project&#39;s proposer or the consortium admin can start a run"),
    ("alice", True, 409, "cannot run yet: proposal"),
])
def test_the_start_run_form_refuses_with_the_services_reason(world: World, who: str, with_csrf: bool,
                                                             status: int, message: str) -> None:
    client = world.client(who)
    page = client.get(f"/projects/{world.project_id}").text
    data = {"csrf": csrf_of(page)} if with_csrf else {}
    with world.app.state.hub.sessions() as session:
        before = session.query(Run).count()
    response = client.post(f"/projects/{world.project_id}/runs", data=data)
    assert response.status_code == status and message in response.text, response.text[-800:]
    with world.app.state.hub.sessions() as session:
        assert session.query(Run).count() == before


def test_no_template_carries_inline_script_or_event_handlers() -> None:
    """``script-src 'self'`` would block them: every script is a file the hub serves."""
    from consortium.hub.web.render import HERE

    for template in (HERE / "templates").glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), template.name
        assert not re.search(r"\son[a-z]+\s*=", text), template.name
        assert "javascript:" not in text, template.name


def test_the_stream_of_a_running_run_wakes_when_a_round_closes(world: World, monkeypatch) -> None:
    """A round committed and announced on the progress key reaches the open stream, and the run's end ends
    it, long before the stream's own time limit (the test's bound on a stream that never woke)."""
    monkeypatch.setattr(run_pages, "MAX_STREAM_S", 20.0)
    state = world.app.state.hub
    with TestClient(world.app, follow_redirects=False) as client:
        form = client.get("/login")
        client.post("/login", data={"csrf": csrf_of(form.text), "token": world.tokens["bob"]})
        with state.sessions() as session:
            run = Run(project_id=world.project_id, status="running", current_round=0)
            session.add(run)
            session.commit()
            run_id = run.id

        def close_round_then_finish() -> None:
            time.sleep(0.5)
            with state.sessions() as session:
                session.add(Round(run_id=run_id, number=1, status="closed", metrics=round_metrics(1)))
                session.commit()
            state.broker.notify(progress_key(run_id))
            time.sleep(0.5)
            with state.sessions() as session:
                session.get(Run, run_id).status = "completed"
                session.commit()
            state.broker.notify(progress_key(run_id))

        writer = threading.Thread(target=close_round_then_finish)
        started = time.monotonic()
        writer.start()
        response = client.get(f"/runs/{run_id}/events")
        writer.join()
    assert time.monotonic() - started < 10
    names = [name for name, _ in events(response.text)]
    assert names[:2] == ["nodes", "run"] and names[-2:] == ["run", "end"], names
    assert names.count("round") == 1, names  # sent after the first run event: the notify woke the stream
