"""Environment cards over HTTP against a real hub process: registration checks naming the field, private
physics kept private, projects naming environments (mixing refused with the reason), owners approving.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_api import env, expect_error, ledger_size  # noqa: F401  (env is the module's hub fixture)
from typer.testing import CliRunner

from consortium.cli import app
from consortium.fl.environments import CARTPOLE_PHYSICS, physics_digest
from consortium.node.environments import prepare_environment
from consortium.protocol import ProjectCreate
from consortium.scenario import ORGS, DigitsConsortium, approve_as, register_environment

pytestmark = pytest.mark.e2e
NORTH, SOUTH, EAST = ORGS
PPO = {"name": "ppo", "hyperparameters": {"hidden": [8], "eval_episodes": 2}}


@pytest.fixture(scope="module")
def environments(env: DigitsConsortium) -> Iterator[DigitsConsortium]:  # noqa: F811
    register_environment(env, NORTH, {"length": 0.6})
    register_environment(env, SOUTH, {"masspole": 0.12}, private_physics=True)
    register_environment(env, EAST, {"gravity": 8.0}, license="Apache-2.0")
    yield env


def ppo_spec(name: str, **fields) -> ProjectCreate:
    return ProjectCreate.model_validate({"name": name, "algorithm": PPO, "rounds": 2} | fields)


def test_cards_are_listed_apart_from_datasets_and_private_physics_stay_private(environments) -> None:
    with environments.hub.client() as admin:
        cards = {c["org"]: c for c in admin.environments()}
        assert sorted(cards) == sorted(ORGS)
        north = cards[NORTH]
        assert north["physics"] == CARTPOLE_PHYSICS | {"length": 0.6} and north["observation_size"] == 4
        digest = physics_digest("CartPole-v1", north["physics"], north["physics_salt"])
        assert digest == north["physics_sha256"]
        assert cards[SOUTH]["physics"] is None and cards[SOUTH]["physics_salt"] is None
        assert cards[EAST]["license"] == "Apache-2.0"
        assert {d["name"] for d in admin.datasets()} == {"digits"}
        assert admin.get_json(f"/api/environments/{SOUTH}/cartpole")["physics"] is None
        expect_error(404, "no dataset", admin.get_json, f"/api/datasets/{NORTH}/cartpole")
        events = [e for e in admin.ledger(limit=10_000) if e["event_type"] == "environment.registered"]
    assert {e["payload"]["environment"] for e in events} == {f"{org}/cartpole" for org in ORGS}
    assert [e["payload"]["physics_private"] for e in events] == [False, True, False]


def _card(**changes) -> dict:
    card = prepare_environment("carts", "CartPole-v1", {"length": 0.6}, "MIT").card.model_dump(mode="json")
    return card | changes


@pytest.mark.parametrize(
    ("changes", "status", "reason"),
    [
        ({"env_id": "Pong-v5"}, 422, "env_id: unknown environment 'Pong-v5'; known: CartPole-v1"),
        ({"physics": CARTPOLE_PHYSICS | {"length": 50.0}}, 422,
         "physics: physics 'length' = 50.0 is out of range"),
        ({"physics": CARTPOLE_PHYSICS | {"wind": 1.0}}, 422, "physics: unknown physics key 'wind'"),
        ({"physics": CARTPOLE_PHYSICS | {"length": 0.7}}, 422, "physics_sha256: does not match"),
        ({"physics_salt": None}, 422, "physics and physics_salt are published together"),
        ({"license": "my own licence"}, 422, "license"),
        ({"name": "digits"}, 409, "already exists (a dataset)"),
        ({"name": "cartpole"}, 409, "already exists (an environment)"),
    ],
)
def test_bad_cards_are_refused_naming_the_field(
    environments, changes: dict, status: int, reason: str
) -> None:
    before = ledger_size(environments.hub)
    with environments.org_client(NORTH) as client:
        expect_error(status, reason, client.post_json, "/api/environments", _card(**changes))
    assert ledger_size(environments.hub) == before


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"algorithm": PPO, "datasets": [f"{NORTH}/digits"]},
         "datasets: the 'ppo' algorithm trains in environments, not on datasets"),
        ({"algorithm": PPO, "datasets": [f"{NORTH}/digits"], "environments": [f"{NORTH}/cartpole"]},
         "datasets: the 'ppo' algorithm trains in environments"),
        ({"algorithm": {"name": "classifier", "hyperparameters": {"layers": [4, 2]}},
          "environments": [f"{NORTH}/cartpole"]},
         "environments: the 'classifier' algorithm trains on rows of data, not in environments"),
        ({"algorithm": PPO, "environments": [f"{NORTH}/cartpole", f"{SOUTH}/cartpole"], "min_nodes": 3},
         "min_nodes: 3 exceeds the 2 environments"),
    ],
)
def test_projects_mixing_algorithms_and_kinds_of_data_are_refused(
    environments, fields: dict, reason: str
) -> None:
    spec = ProjectCreate.model_validate({"name": "mixed", "rounds": 2} | fields)
    with environments.hub.client() as admin:
        expect_error(422, reason, admin.create_project, spec)
        assert all(p["name"] != "mixed" for p in admin.get_json("/api/projects"))


def test_environment_owners_approve_and_no_test_set_is_taken(environments) -> None:
    spec = ppo_spec("ppo-two", environments=[f"{NORTH}/cartpole", f"{SOUTH}/cartpole"])
    with environments.hub.client() as admin:
        project = admin.create_project(spec)
        assert project["required_orgs"] == sorted([NORTH, SOUTH])
        assert project["spec"]["environments"] == [f"{NORTH}/cartpole", f"{SOUTH}/cartpole"]
        expect_error(422, "a project trained in environments has no test set", admin.put_test_set,
                     project["id"], environments.test_set_bytes())
    expect_error(404, f"no project {project['id']}", approve_as, environments.org_dirs[EAST],
                 environments.hub.url, project)
    approve_as(environments.org_dirs[NORTH], environments.hub.url, project)
    with environments.hub.client() as admin:
        assert admin.project(project["id"])["status"] == "proposed"
    approve_as(environments.org_dirs[SOUTH], environments.hub.url, project)
    with environments.hub.client() as admin:
        assert admin.project(project["id"])["status"] == "approved"


def test_environment_list_shows_private_physics_as_private(environments) -> None:
    result = CliRunner().invoke(app, ["environment", "list", "--hub", environments.hub.url,
                                      "--token", environments.hub.admin_token], env={"COLUMNS": "150"})
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 2}
    assert "private" in rows[f"{SOUTH}/cartpole"], result.output
    assert "length=0.6" in rows.get(f"{NORTH}/cartpole", ""), result.output
    assert "gravity=8" in rows.get(f"{EAST}/cartpole", ""), result.output
