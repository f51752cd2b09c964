"""The node's local RL environments: a gymnasium id plus the org's own physics, registered like datasets.

Rollouts never leave the node. What leaves is an :class:`~consortium.environments_wire.EnvironmentCardIn`: the
gymnasium id, the licence and a commitment to the physics, ``physics_digest(env_id, physics, salt)`` with a
random salt. A public card also carries the physics and the salt, so anyone can check the commitment; a card
with private physics carries neither, and the salted digest cannot be matched against guessed values, yet the
org can later prove which physics it trained with by revealing them and the salt (kept in
``<org_dir>/environments.json``).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from consortium.atomic import exclusive_lock, write_json_atomic
from consortium.fl.core import FLError
from consortium.fl.environments import (
    LocalEnvironment,
    check_environment,
    default_physics,
    full_physics,
    physics_digest,
)
from consortium.environments_wire import EnvironmentCardIn
from consortium.protocol import Visibility

ENVIRONMENTS_FILE = "environments.json"


class EnvironmentSetupError(FLError):
    """A bad environment id, physics or card field, or a broken local registry; the message names it."""


def parse_physics_option(text: str | None) -> dict[str, float]:
    """The ``--physics`` JSON object (``'{"length": 0.6, "gravity": 9.0}'``); empty for none."""
    if text is None or not text.strip():
        return {}
    try:
        physics = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EnvironmentSetupError(
            f"--physics is not valid JSON ({exc}); e.g. '{{\"length\": 0.6}}'"
        ) from exc
    if not isinstance(physics, dict):
        raise EnvironmentSetupError(f"--physics must be a JSON object of key: number, got {text!r}")
    return physics


def local_environment(env_id: str, physics: Mapping[str, Any]) -> LocalEnvironment:
    """A checked environment with every physics value filled in; errors name the id or the physics key."""
    try:
        default_physics(env_id)
    except FLError as exc:
        raise EnvironmentSetupError(f"gym id: {exc}") from exc
    environment = LocalEnvironment(env_id, dict(physics))
    try:
        check_environment(environment)
    except FLError as exc:
        raise EnvironmentSetupError(str(exc)) from exc
    return LocalEnvironment(env_id, full_physics(environment))


def new_salt() -> str:
    return secrets.token_hex(16)


def build_card(
    name: str,
    environment: LocalEnvironment,
    salt: str,
    license: str,
    description: str = "",
    visibility: Visibility | str = "members",
    private_physics: bool = False,
) -> EnvironmentCardIn:
    """The card of a local environment, validated; :class:`EnvironmentSetupError` names a bad field."""
    try:
        return EnvironmentCardIn.model_validate(
            {
                "name": name,
                "description": description,
                "env_id": environment.env_id,
                "physics": None if private_physics else full_physics(environment),
                "physics_salt": None if private_physics else salt,
                "physics_sha256": physics_digest(environment.env_id, environment.physics, salt),
                "license": license,
                "visibility": visibility,
            }
        )
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "card"
            value = {"name": name, "license": license, "visibility": visibility}.get(field)
            shown = f" {value!r}" if value is not None else ""
            problems.append(f"{field}{shown}: {err['msg']}")
        raise EnvironmentSetupError("; ".join(problems)) from exc


@dataclass(frozen=True)
class RegisteredEnvironment:
    """One entry of the node's environment registry: the environment, its salt and its card."""

    name: str
    environment: LocalEnvironment
    salt: str
    card: EnvironmentCardIn


def prepare_environment(
    name: str,
    env_id: str,
    physics: Mapping[str, Any],
    license: str,
    description: str = "",
    visibility: Visibility | str = "members",
    private_physics: bool = False,
) -> RegisteredEnvironment:
    """A checked environment with a fresh salt and its card: what the hub gets and the registry keeps."""
    environment = local_environment(env_id, physics)
    salt = new_salt()
    card = build_card(name, environment, salt, license, description, visibility, private_physics)
    return RegisteredEnvironment(name, environment, salt, card)


class EnvironmentRegistry:
    """The node's record of its environments in ``<org_dir>/environments.json`` (atomic, locked writes)."""

    def __init__(self, org_dir: str | os.PathLike[str]) -> None:
        self.org_dir = Path(org_dir)
        self.path = self.org_dir / ENVIRONMENTS_FILE

    def add(self, entry: RegisteredEnvironment) -> None:
        """Record (or replace) an environment; its card must commit to its physics and salt."""
        if entry.card.name != entry.name:
            raise EnvironmentSetupError(
                f"card name {entry.card.name!r} does not match the name {entry.name!r}"
            )
        _check_commitment(entry)
        with exclusive_lock(self.path):
            data = self._read()
            data["environments"][entry.name] = {
                "env_id": entry.environment.env_id,
                "physics": entry.environment.physics,
                "salt": entry.salt,
                "card": entry.card.model_dump(mode="json"),
            }
            write_json_atomic(self.path, data)

    def get(self, name: str) -> RegisteredEnvironment:
        """The registered environment called ``name``; :class:`EnvironmentSetupError` when there is none."""
        environments = self._read()["environments"]
        raw = environments.get(name)
        if raw is None:
            known = ", ".join(sorted(environments)) or "none"
            raise EnvironmentSetupError(
                f"no local environment named {name!r} in {self.path}; registered: {known}"
            )
        try:
            return RegisteredEnvironment(
                name, LocalEnvironment(raw["env_id"], dict(raw["physics"])), raw["salt"],
                EnvironmentCardIn.model_validate(raw["card"]),
            )
        except (KeyError, TypeError, ValidationError) as exc:
            raise EnvironmentSetupError(f"{self.path}: entry {name!r} is malformed: {exc}") from exc

    def all(self) -> list[RegisteredEnvironment]:
        return [self.get(name) for name in sorted(self._read()["environments"])]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._read()["environments"]

    def load_local(self, name: str) -> LocalEnvironment:
        """The environment to play, after checking that its physics still match the published commitment."""
        entry = self.get(name)
        _check_commitment(entry)
        return local_environment(entry.environment.env_id, entry.environment.physics)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"version": 1, "environments": {}}
        except json.JSONDecodeError as exc:
            raise EnvironmentSetupError(f"{self.path}: not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("environments"), dict):
            raise EnvironmentSetupError(f"{self.path}: expected an object with an 'environments' object")
        return data


def _check_commitment(entry: RegisteredEnvironment) -> None:
    environment = entry.environment
    if physics_digest(environment.env_id, environment.physics, entry.salt) != entry.card.physics_sha256:
        raise EnvironmentSetupError(
            f"environment {entry.name!r}: its physics no longer match the card's physics_sha256; "
            "register it again to publish a new card"
        )
