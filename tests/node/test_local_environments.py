"""The node's environments: option parsing, validation naming the field, cards (public or private physics),
the local registry and its commitment check, and `consortium environment add`'s errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consortium.cli import app
from consortium.fl.environments import CARTPOLE_PHYSICS, LocalEnvironment, physics_digest
from consortium.node.environments import (
    EnvironmentRegistry,
    EnvironmentSetupError,
    RegisteredEnvironment,
    build_card,
    local_environment,
    new_salt,
    parse_physics_option,
    prepare_environment,
)

runner = CliRunner()


def registered(
    name: str = "cartpole", physics: dict | None = None, private: bool = False
) -> RegisteredEnvironment:
    physics = physics or {"length": 0.6}
    return prepare_environment(name, "CartPole-v1", physics, "MIT", private_physics=private)


def test_physics_option_is_a_json_object() -> None:
    assert parse_physics_option('{"length": 0.6, "gravity": 9}') == {"length": 0.6, "gravity": 9}
    assert parse_physics_option(None) == {} == parse_physics_option("  ")
    with pytest.raises(EnvironmentSetupError, match="--physics is not valid JSON"):
        parse_physics_option("{length: 0.6}")
    with pytest.raises(EnvironmentSetupError, match="--physics must be a JSON object"):
        parse_physics_option("[0.6]")


@pytest.mark.parametrize(
    ("env_id", "physics", "message"),
    [
        ("CartPole-v9", {}, "gym id: unknown environment 'CartPole-v9'; known: CartPole-v1"),
        ("CartPole-v1", {"colour": 1.0}, "unknown physics key 'colour' for CartPole-v1; known: force_mag"),
        ("CartPole-v1", {"gravity": 200.0}, r"physics 'gravity' = 200.0 is out of range .* \[0.98, 98\]"),
        ("CartPole-v1", {"masspole": -0.1}, "physics 'masspole' must be a finite number > 0"),
    ],
)
def test_bad_environments_name_the_field(env_id: str, physics: dict, message: str) -> None:
    with pytest.raises(EnvironmentSetupError, match=message):
        local_environment(env_id, physics)


def test_local_environment_fills_in_the_defaults() -> None:
    environment = local_environment("CartPole-v1", {"length": 0.6})
    assert environment.physics == CARTPOLE_PHYSICS | {"length": 0.6}


def test_public_card_lets_anyone_check_the_commitment() -> None:
    entry = registered()
    card = entry.card
    assert card.physics == CARTPOLE_PHYSICS | {"length": 0.6}
    assert card.physics_salt == entry.salt
    assert physics_digest(card.env_id, card.physics, card.physics_salt) == card.physics_sha256


def test_private_card_carries_only_the_commitment() -> None:
    entry = registered(private=True)
    assert entry.card.physics is None and entry.card.physics_salt is None
    assert entry.card.physics_sha256 == physics_digest("CartPole-v1", entry.environment.physics, entry.salt)
    assert "0.6" not in entry.card.model_dump_json()


def test_two_registrations_of_the_same_physics_commit_differently() -> None:
    assert registered().card.physics_sha256 != registered().card.physics_sha256


def test_bad_card_fields_are_named() -> None:
    environment = local_environment("CartPole-v1", {})
    with pytest.raises(EnvironmentSetupError, match="license 'not a licence!'"):
        build_card("cartpole", environment, new_salt(), "not a licence!")
    with pytest.raises(EnvironmentSetupError, match="name 'Cart Pole'"):
        build_card("Cart Pole", environment, new_salt(), "MIT")


def test_registry_round_trips_and_loads_the_environment(tmp_path: Path) -> None:
    registry = EnvironmentRegistry(tmp_path)
    assert registry.all() == [] and "cartpole" not in registry
    entry = registered()
    registry.add(entry)
    assert "cartpole" in registry
    assert registry.get("cartpole") == entry
    expected = LocalEnvironment("CartPole-v1", CARTPOLE_PHYSICS | {"length": 0.6})
    assert registry.load_local("cartpole") == expected
    registry.add(registered("other", {"gravity": 9.0}))
    assert [e.name for e in registry.all()] == ["cartpole", "other"]
    with pytest.raises(EnvironmentSetupError, match="no local environment named 'missing'.*cartpole, other"):
        registry.get("missing")


def test_registry_refuses_physics_changed_behind_the_card(tmp_path: Path) -> None:
    registry = EnvironmentRegistry(tmp_path)
    registry.add(registered())
    data = json.loads(registry.path.read_text())
    data["environments"]["cartpole"]["physics"]["length"] = 0.7
    registry.path.write_text(json.dumps(data))
    with pytest.raises(EnvironmentSetupError, match="no longer match the card's physics_sha256"):
        registry.load_local("cartpole")


def test_registry_refuses_a_card_that_does_not_commit_to_the_physics(tmp_path: Path) -> None:
    entry = registered()
    other = RegisteredEnvironment("cartpole", local_environment("CartPole-v1", {"length": 0.7}), entry.salt,
                                  entry.card)
    with pytest.raises(EnvironmentSetupError, match="no longer match"):
        EnvironmentRegistry(tmp_path).add(other)
    assert not (tmp_path / "environments.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gym", "Pendulum-v1"], "unknown environment 'Pendulum-v1'"),
        (["--gym", "CartPole-v1", "--physics", '{"wind": 2}'], "unknown physics key 'wind'"),
        (["--gym", "CartPole-v1", "--physics", '{"length": 50}'], "physics 'length' = 50 is out of range"),
        (["--gym", "CartPole-v1", "--physics", "length=0.6"], "--physics is not valid JSON"),
    ],
)
def test_environment_add_names_the_bad_field_before_calling_the_hub(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["environment", "add", "cartpole", *args, "--license", "MIT",
                                 "--hub", "http://127.0.0.1:9", "--org-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "environments.json").exists()
