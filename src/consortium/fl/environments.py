"""Environments: the RL counterpart of a dataset, a gymnasium environment id plus one organisation's physics.

A :class:`LocalEnvironment` is a pure description; gymnasium is imported only when :func:`make_env` builds
the environment, so importing this module costs nothing. Physics are the attributes of the environment's
simulator that an organisation may set (for CartPole: gravity, cart and pole masses, pole half-length, push
force); keys left out keep gymnasium's defaults.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from consortium.fl.core import FLError

CARTPOLE_PHYSICS: dict[str, float] = {
    "gravity": 9.8,
    "masscart": 1.0,
    "masspole": 0.1,
    "length": 0.5,
    "force_mag": 10.0,
}
"""gymnasium's CartPole defaults (``length`` is half the pole's length)."""

_DEFAULT_PHYSICS: dict[str, dict[str, float]] = {"CartPole-v1": CARTPOLE_PHYSICS}

VARIED_PHYSICS: tuple[str, ...] = ("length", "masspole", "gravity")
"""The physics keys :func:`physics_variants` spreads; the others keep their defaults."""

PHYSICS_RANGE_FACTOR = 10.0
"""A physics value must lie within this factor of its default either way (CartPole stays CartPole)."""


@dataclass(frozen=True)
class LocalEnvironment:
    """One client's environment: a gymnasium id and the physics it overrides (empty: the standard one)."""

    env_id: str
    physics: dict[str, float] = field(default_factory=dict)


def known_environments() -> list[str]:
    return sorted(_DEFAULT_PHYSICS)


def default_physics(env_id: str) -> dict[str, float]:
    """The standard physics of ``env_id``; FLError naming the known ids otherwise."""
    if env_id not in _DEFAULT_PHYSICS:
        raise FLError(f"unknown environment {env_id!r}; known: {', '.join(known_environments())}")
    return dict(_DEFAULT_PHYSICS[env_id])


def _is_positive_number(value: object) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def physics_ranges(env_id: str) -> dict[str, tuple[float, float]]:
    """The allowed ``[low, high]`` of each physics key: :data:`PHYSICS_RANGE_FACTOR` either way of the
    default."""
    return {
        key: (default / PHYSICS_RANGE_FACTOR, default * PHYSICS_RANGE_FACTOR)
        for key, default in default_physics(env_id).items()
    }


def check_environment(environment: LocalEnvironment) -> None:
    """FLError naming the env id, or the physics key, that is unknown, not a finite positive number, or out of
    its range (:func:`physics_ranges`)."""
    ranges = physics_ranges(environment.env_id)
    for key, value in environment.physics.items():
        if key not in ranges:
            raise FLError(
                f"unknown physics key {key!r} for {environment.env_id}; known: {', '.join(sorted(ranges))}"
            )
        if not _is_positive_number(value):
            raise FLError(f"physics {key!r} must be a finite number > 0, got {value!r}")
        low, high = ranges[key]
        if not low <= value <= high:
            raise FLError(
                f"physics {key!r} = {value!r} is out of range for {environment.env_id}: "
                f"it must lie in [{low:.6g}, {high:.6g}]"
            )


def full_physics(environment: LocalEnvironment) -> dict[str, float]:
    """Every physics value of ``environment``: its overrides on top of the defaults."""
    check_environment(environment)
    return default_physics(environment.env_id) | {k: float(v) for k, v in environment.physics.items()}


def physics_digest(env_id: str, physics: Mapping[str, float], salt: str) -> str:
    """SHA-256 (hex) committing to an environment: canonical JSON of its id, full physics and a salt.

    With the physics and the salt published anyone can check the digest; with both kept private the digest
    reveals nothing guessable (the salt defeats trying likely values) yet binds the owner to its physics.
    """
    full = full_physics(LocalEnvironment(env_id, dict(physics)))
    body = {"env_id": env_id, "physics": full, "salt": salt}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _apply_cartpole_physics(unwrapped: Any, physics: Mapping[str, float]) -> None:
    for key, value in physics.items():
        setattr(unwrapped, key, value)
    unwrapped.total_mass = unwrapped.masspole + unwrapped.masscart
    unwrapped.polemass_length = unwrapped.masspole * unwrapped.length


def make_env(environment: LocalEnvironment) -> Any:
    """The gymnasium environment (with its standard wrappers, e.g. the time limit) under the given physics."""
    physics = full_physics(environment)
    import gymnasium

    env = gymnasium.make(environment.env_id)
    _apply_cartpole_physics(env.unwrapped, physics)
    return env


def observation_size(environment: LocalEnvironment) -> int:
    """Number of numbers in one observation of ``environment``."""
    env = make_env(environment)
    try:
        return int(np.prod(env.observation_space.shape))
    finally:
        env.close()


def physics_variants(
    num: int, spread: float, seed: int, env_id: str = "CartPole-v1"
) -> list[dict[str, float]]:
    """``num`` seeded physics, each :data:`VARIED_PHYSICS` value uniform within ±``spread`` of its default.

    Variant ``i`` does not depend on ``num`` (the first variants of a longer list are the same).
    """
    if num < 0:
        raise FLError(f"the number of physics variants must be >= 0, got {num}")
    if not 0.0 <= spread < 1.0:
        raise FLError(f"physics_spread must lie in [0, 1), got {spread}")
    defaults = default_physics(env_id)
    factors = 1.0 + spread * np.random.default_rng(seed).uniform(-1.0, 1.0, size=(num, len(VARIED_PHYSICS)))
    return [
        {key: defaults[key] * float(factor) for key, factor in zip(VARIED_PHYSICS, row, strict=True)}
        for row in factors
    ]
