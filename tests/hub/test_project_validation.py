"""Proposing a project whose strategy, server optimiser or privacy settings cannot work is refused over HTTP,
with the reason.

A real hub process on SQLite and PostgreSQL, provisioned like the API tests (three orgs, digits data).
"""

from __future__ import annotations

import pytest
from test_api import env, expect_error, ledger_size  # noqa: F401  (env is the module's hub fixture)

from consortium.scenario import ORGS, DigitsConsortium, digits_spec

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("strategy", "min_nodes", "reason"),
    [
        ({"name": "krum", "options": {"f": 1}}, 3, "krum with f=1 needs more than 2f+2 = 4 updates"),
        ({"name": "bulyan", "options": {"f": 1}}, 3, "bulyan with f=1 needs at least 4f+3 = 7 updates"),
        ({"name": "trimmed_mean", "options": {"beta": 0.2, "f": 1}}, 3, "with f=1 needs beta >= f/n = 1/3"),
        ({"name": "multikrum", "options": {"f": 0, "m": 4}}, 3, "multikrum with m=4 needs at least m"),
    ],
)
def test_impossible_cohort_is_refused_with_the_reason(
    env: DigitsConsortium, strategy: dict, min_nodes: int, reason: str  # noqa: F811
) -> None:
    name = f"too-few-for-{strategy['name'].replace('_', '-')}"
    spec = digits_spec(name, ORGS, rounds=2, min_nodes=min_nodes, strategy=strategy)
    before = ledger_size(env.hub)
    with env.hub.client() as admin:
        err = expect_error(422, reason, admin.create_project, spec)
        assert f"min_nodes={min_nodes}" in err.detail
        assert all(p["name"] != name for p in admin.get_json("/api/projects"))
    assert ledger_size(env.hub) == before


@pytest.mark.parametrize(
    ("server_optimizer", "reason"),
    [
        ({"name": "lamb"}, "unknown server optimizer 'lamb'; known: adagrad, adam, sgd, yogi"),
        ({"name": "adam", "options": {"lr": 0}}, "bad options for server optimizer 'adam': lr: Input should"),
        ({"name": "sgd", "options": {"nesterov": True}}, "nesterov: Extra inputs are not permitted"),
    ],
)
def test_bad_server_optimizer_is_refused(
    env: DigitsConsortium, server_optimizer: dict, reason: str  # noqa: F811
) -> None:
    strategy = {"name": "fedavg", "server_optimizer": server_optimizer}
    spec = digits_spec("bad-server-optimizer", ORGS, rounds=2, strategy=strategy)
    with env.hub.client() as admin:
        expect_error(422, reason, admin.create_project, spec)


def test_bad_robust_option_is_refused(env: DigitsConsortium) -> None:  # noqa: F811
    spec = digits_spec("krum-without-f", ORGS, rounds=2, strategy={"name": "krum"})
    with env.hub.client() as admin:
        expect_error(422, "bad options for strategy 'krum': f: Field required", admin.create_project, spec)


def test_workable_robust_project_with_server_optimizer_is_proposed(env: DigitsConsortium) -> None:  # noqa: F811
    strategy = {
        "name": "krum",
        "options": {"f": 0},
        "server_optimizer": {"name": "yogi", "options": {"lr": 0.05}},
    }
    spec = digits_spec("robust-yogi", ORGS, rounds=2, min_nodes=3, strategy=strategy)
    with env.hub.client() as admin:
        project = admin.create_project(spec)
    assert project["status"] == "proposed"
    assert project["spec"]["strategy"] == strategy


def test_spec_without_server_optimizer_keeps_its_json(env: DigitsConsortium) -> None:  # noqa: F811
    with env.hub.client() as admin:
        project = admin.create_project(digits_spec("plain-fedavg", ORGS, rounds=2))
    assert project["spec"]["strategy"] == {"name": "fedavg", "options": {}}


def test_scaffold_with_momentum_is_refused_with_the_reason(env: DigitsConsortium) -> None:  # noqa: F811
    from consortium.scenario import DIGITS_HYPERPARAMETERS

    algorithm = {"name": "classifier", "hyperparameters": DIGITS_HYPERPARAMETERS | {"scaffold": True}}
    spec = digits_spec("scaffold-momentum", ORGS, rounds=2, algorithm=algorithm)
    with env.hub.client() as admin:
        expect_error(422, "scaffold needs optimizer 'sgd' with momentum 0", admin.create_project, spec)


DP = {"noise": "central", "clip": 1.0, "epsilon": 4.0, "delta": 1e-5}


@pytest.mark.parametrize(
    ("privacy", "reason"),
    [
        (DP | {"epsilon": 0}, "privacy.epsilon"),
        (DP | {"epsilon": -1}, "greater than 0"),
        (DP | {"delta": 1.0}, "privacy.delta"),
        (DP | {"clip": 0}, "privacy.clip"),
        (DP | {"noise": "shouted"}, "privacy.noise"),
        (DP | {"sampling": "bernoulli"}, "privacy.sampling"),
        (DP | {"mechanism": "pate"}, "privacy.mechanism"),
        (DP | {"extra": 1}, "privacy.extra"),
    ],
)
def test_bad_privacy_field_is_refused_naming_the_field(
    env: DigitsConsortium, privacy: dict, reason: str  # noqa: F811
) -> None:
    spec = digits_spec("bad-privacy", ORGS, rounds=2).model_dump(mode="json") | {"privacy": privacy}
    with env.hub.client() as admin:
        expect_error(422, reason, admin.post_json, "/api/projects", spec)


@pytest.mark.parametrize(
    ("privacy", "strategy", "reason"),
    [
        (DP | {"noise": "distributed"}, {"name": "fedavg"},
         "'distributed' noise needs secure aggregation (strategy.secure_aggregation)"),
        (DP | {"noise": "distributed"}, {"name": "krum", "options": {"f": 0}},
         "needs individual updates, which privacy.noise = 'distributed' forbids"),
        (DP, {"name": "median"}, "central noise is calibrated to the mean"),
        (DP | {"noise_multiplier": 0.1}, {"name": "fedavg"}, "privacy.noise_multiplier: 0.1 spends epsilon"),
    ],
)
def test_privacy_a_run_cannot_keep_is_refused_with_the_rule(
    env: DigitsConsortium, privacy: dict, strategy: dict, reason: str  # noqa: F811
) -> None:
    spec = digits_spec("impossible-privacy", ORGS, rounds=2, min_nodes=3, strategy=strategy,
                       privacy=privacy)
    with env.hub.client() as admin:
        expect_error(422, reason, admin.create_project, spec)


def test_a_private_project_is_proposed_with_its_privacy_in_the_spec(env: DigitsConsortium) -> None:  # noqa: F811
    spec = digits_spec("private-fedavg", ORGS, rounds=2, privacy=DP)
    with env.hub.client() as admin:
        project = admin.create_project(spec)
    assert project["status"] == "proposed"
    assert project["spec"]["privacy"] == DP | {"mechanism": "dp_fedavg", "sampling": "poisson"}


@pytest.mark.parametrize(
    ("preprocessing", "reason"),
    [
        ({"scale": "standardise", "columns": ["p1", "height"]}, "preprocessing: unknown feature column(s) ['height']"),
        ({"scale": "zscore"}, "preprocessing.scale: Input should be 'standardise', 'min-max' or 'none'"),
        ({"scale": "standardise", "standardize": True}, "preprocessing.standardize: Extra inputs are not permitted"),
    ],
)
def test_bad_preprocessing_is_refused_naming_the_field(
    env: DigitsConsortium, preprocessing: dict, reason: str  # noqa: F811
) -> None:
    spec = digits_spec("bad-preprocessing", ORGS, rounds=2).model_dump(mode="json") | {"preprocessing": preprocessing}
    with env.hub.client() as admin:
        expect_error(422, reason, admin.post_json, "/api/projects", spec)
