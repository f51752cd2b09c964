"""The challenge pages on SQLite and PostgreSQL: the list and a challenge's statement with its public board
for logged-in users, the final board only from the deadline on, anonymous visitors sent to log in."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from consortium.config import HubSettings
from consortium.hub.app import create_app
from consortium.hub.db.challenge_models import Challenge, ChallengeSubmission
from consortium.hub.db.models import Org
from consortium.hub.services import identity
from consortium.hub.services.identity import Principal
from consortium.protocol import Role, UserCreate

ADMIN_TOKEN = "csm_" + "c" * 40
DEADLINE = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
STATEMENT = {
    "type": "consortium-challenge/1", "hub_id": "0" * 32, "host": "north", "name": "iris-like",
    "task": "classify <b>irises</b>", "algorithm_family": "classifier", "metric": "accuracy",
    "higher_is_better": True, "schema": {"features": [{"name": "f0", "dtype": "float64"}],
                                         "target": {"name": "label", "dtype": "int64"}},
    "num_features": 1, "deadline": DEADLINE.isoformat(), "daily_limit": 2, "prize": 40, "split_seed": 7,
    "public_fraction": 0.5, "public_sha256": "a" * 64, "private_sha256": "b" * 64, "public_rows": 10,
    "private_rows": 10}


@pytest.fixture(scope="module")
def hub(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, str, int]]:
    """North hosts a challenge; south (team south+east) and east entered, public and private scores posted."""
    app = create_app(HubSettings.from_args(module_db_url, Path(tmp_path_factory.mktemp("web")), ADMIN_TOKEN))
    admin = Principal("user", "admin", Role.admin, None, None)
    with app.state.hub.sessions() as session:
        orgs = {n: Org(name=n, display_name=n.title(), status="admitted") for n in ("north", "south", "east")}
        session.add_all(orgs.values())
        session.commit()
        sam = UserCreate(name="sam", role=Role.steward, org="south")
        token = identity.create_user(session, admin, sam)[1]
        challenge = Challenge(host_org_id=orgs["north"].id, name="iris-like", statement=STATEMENT,
                              signature="s" * 88, deadline=DEADLINE, opened_seq=1)
        session.add(challenge)
        session.flush()
        entries = (("south", ["south", "east"], 0.91, 0.5), ("east", ["east"], 0.8, 0.7))
        for org, team, public, private in entries:
            session.add(ChallengeSubmission(
                challenge_id=challenge.id, org_id=orgs[org].id, team=team, weights_sha256="c" * 64,
                algorithm={"name": "classifier", "hyperparameters": {}},
                submitted_at=DEADLINE - timedelta(days=1),
                public_score=public, public_seq=2, private_score=private, private_seq=3))
        session.commit()
        yield app, token, challenge.id


def browser(app, token: str) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    form = client.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    assert client.post("/login", data={"csrf": csrf, "token": token, "next": "/"}).status_code == 303
    return client


def ranks(html: str) -> list[tuple[str, str]]:
    return re.findall(r"<tr><td>(\d+)</td><td>(\w+)</td>", html)


def test_the_list_and_the_public_board_before_the_deadline(hub) -> None:
    app, token, challenge_id = hub
    app.state.hub.clock = lambda: DEADLINE - timedelta(hours=1)
    client = browser(app, token)
    listing = client.get("/challenges").text
    assert f'href="/challenges/{challenge_id}"' in listing and "open" in listing and "40 credits" in listing
    page = client.get(f"/challenges/{challenge_id}").text
    assert "classify &lt;b&gt;irises&lt;/b&gt;" in page and "Final board" not in page
    assert ranks(page) == [("1", "south"), ("2", "east")] and "south, east" in page
    assert "0.5" not in page and "0.7" not in page  # no private score before the deadline


def test_the_final_board_from_the_deadline_on(hub) -> None:
    app, token, challenge_id = hub
    app.state.hub.clock = lambda: DEADLINE
    page = browser(app, token).get(f"/challenges/{challenge_id}").text
    final, public = page.split("<h2>Public board</h2>")
    assert "Final board" in final and ranks(final) == [("1", "east"), ("2", "south")]
    assert ranks(public) == [("1", "south"), ("2", "east")]


def test_anonymous_visitors_log_in_first_and_a_missing_challenge_is_a_404_page(hub) -> None:
    app, token, challenge_id = hub
    anonymous = TestClient(app, follow_redirects=False)
    for path in ("/challenges", f"/challenges/{challenge_id}"):
        assert anonymous.get(path).status_code == 303
    missing = browser(app, token).get("/challenges/999")
    assert missing.status_code == 404 and "no challenge 999" in missing.text
