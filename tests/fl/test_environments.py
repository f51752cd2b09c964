"""Environments: seeded physics variants, physics applied to gymnasium's CartPole, clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.fl.core import FLError
from consortium.fl.environments import (
    CARTPOLE_PHYSICS,
    VARIED_PHYSICS,
    LocalEnvironment,
    PHYSICS_RANGE_FACTOR,
    full_physics,
    make_env,
    observation_size,
    physics_digest,
    physics_ranges,
    physics_variants,
)


def steps_until_the_pole_falls(environment: LocalEnvironment, seed: int = 0) -> int:
    """Episode length when the cart is pushed left and right in turn (no control of the pole)."""
    env = make_env(environment)
    env.reset(seed=seed)
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, _ = env.step(steps % 2)
        steps += 1
        done = terminated or truncated
    env.close()
    return steps


@pytest.mark.parametrize("spread", [0.0, 0.1, 0.3])
def test_variants_stay_within_the_spread_of_the_defaults(spread: float) -> None:
    variants = physics_variants(50, spread, seed=7)
    assert len(variants) == 50
    for physics in variants:
        assert set(physics) == set(VARIED_PHYSICS)
        for key, value in physics.items():
            default = CARTPOLE_PHYSICS[key]
            assert default * (1 - spread) <= value <= default * (1 + spread), (key, value)


def test_variants_are_seeded_differ_and_do_not_depend_on_the_count() -> None:
    variants = physics_variants(5, 0.3, seed=42)
    assert variants == physics_variants(5, 0.3, seed=42)
    assert variants != physics_variants(5, 0.3, seed=43)
    assert physics_variants(3, 0.3, seed=42) == variants[:3]
    assert len({tuple(sorted(v.items())) for v in variants}) == 5
    for key in VARIED_PHYSICS:
        values = [v[key] for v in variants]
        assert max(values) - min(values) > 0.1 * CARTPOLE_PHYSICS[key], key


def test_physics_are_applied_to_the_simulator() -> None:
    physics = {"length": 0.65, "masspole": 0.13, "gravity": 7.0}
    unwrapped = make_env(LocalEnvironment("CartPole-v1", physics)).unwrapped
    assert (unwrapped.length, unwrapped.masspole, unwrapped.gravity) == (0.65, 0.13, 7.0)
    assert unwrapped.total_mass == pytest.approx(0.13 + 1.0)
    assert unwrapped.polemass_length == pytest.approx(0.13 * 0.65)
    standard = make_env(LocalEnvironment("CartPole-v1")).unwrapped
    assert (standard.length, standard.masspole, standard.gravity) == (0.5, 0.1, 9.8)


def test_physics_change_the_dynamics() -> None:
    standard = steps_until_the_pole_falls(LocalEnvironment("CartPole-v1"))
    strong_gravity = steps_until_the_pole_falls(LocalEnvironment("CartPole-v1", {"gravity": 30.0}))
    long_pole = steps_until_the_pole_falls(LocalEnvironment("CartPole-v1", {"length": 2.0}))
    assert strong_gravity < standard < long_pole


def test_full_physics_fill_in_the_defaults() -> None:
    physics = full_physics(LocalEnvironment("CartPole-v1", {"gravity": 11}))
    assert physics == CARTPOLE_PHYSICS | {"gravity": 11.0}
    assert observation_size(LocalEnvironment("CartPole-v1")) == 4


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (LocalEnvironment("MountainCar-v0"), "unknown environment 'MountainCar-v0'; known: CartPole-v1"),
        (
            LocalEnvironment("CartPole-v1", {"friction": 0.1}),
            "unknown physics key 'friction' for CartPole-v1",
        ),
        (LocalEnvironment("CartPole-v1", {"length": 0.0}), "physics 'length' must be a finite number > 0"),
        (LocalEnvironment("CartPole-v1", {"gravity": float("nan")}), "physics 'gravity' must be a finite"),
        (LocalEnvironment("CartPole-v1", {"masspole": "heavy"}), "physics 'masspole' must be a finite"),
        (
            LocalEnvironment("CartPole-v1", {"length": 5.5}),
            r"physics 'length' = 5.5 is out of range for CartPole-v1: it must lie in \[0.05, 5\]",
        ),
        (LocalEnvironment("CartPole-v1", {"gravity": 0.5}), r"physics 'gravity' = 0.5 is out of range"),
    ],
)
def test_bad_environments_name_the_problem(environment: LocalEnvironment, message: str) -> None:
    with pytest.raises(FLError, match=message):
        make_env(environment)


@pytest.mark.parametrize(
    ("num", "spread", "env_id", "message"),
    [
        (-1, 0.3, "CartPole-v1", "must be >= 0"),
        (5, 1.0, "CartPole-v1", r"physics_spread must lie in \[0, 1\), got 1.0"),
        (5, -0.1, "CartPole-v1", "physics_spread must lie in"),
        (5, 0.3, "Pong-v5", "unknown environment 'Pong-v5'"),
    ],
)
def test_bad_variant_requests_fail(num: int, spread: float, env_id: str, message: str) -> None:
    with pytest.raises(FLError, match=message):
        physics_variants(num, spread, seed=0, env_id=env_id)


def test_ranges_span_the_factor_either_way_of_each_default() -> None:
    ranges = physics_ranges("CartPole-v1")
    assert set(ranges) == set(CARTPOLE_PHYSICS)
    for key, (low, high) in ranges.items():
        assert low == pytest.approx(CARTPOLE_PHYSICS[key] / PHYSICS_RANGE_FACTOR)
        assert high == pytest.approx(CARTPOLE_PHYSICS[key] * PHYSICS_RANGE_FACTOR)
        make_env(LocalEnvironment("CartPole-v1", {key: low})).close()
        make_env(LocalEnvironment("CartPole-v1", {key: high})).close()


@settings(max_examples=30, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted(CARTPOLE_PHYSICS)), st.floats(0.2, 5.0), max_size=len(CARTPOLE_PHYSICS)
    ),
    st.text("0123456789abcdef", min_size=32, max_size=32),
)
def test_digest_commits_to_the_full_physics_and_the_salt(physics: dict[str, float], salt: str) -> None:
    scaled = {key: CARTPOLE_PHYSICS[key] * factor for key, factor in physics.items()}
    digest = physics_digest("CartPole-v1", scaled, salt)
    full = full_physics(LocalEnvironment("CartPole-v1", scaled))
    assert physics_digest("CartPole-v1", dict(reversed(list(full.items()))), salt) == digest
    other_salt = "f" * 32 if salt != "f" * 32 else "0" * 32
    assert physics_digest("CartPole-v1", scaled, other_salt) != digest
    nudged = full | {"length": full["length"] * 1.01}
    assert physics_digest("CartPole-v1", nudged, salt) != digest


def test_digest_checks_the_physics() -> None:
    with pytest.raises(FLError, match="unknown physics key 'wind'"):
        physics_digest("CartPole-v1", {"wind": 1.0}, "0" * 32)
