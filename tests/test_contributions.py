"""A round's valuation game built from a run plan: coalitions scored on real classifier updates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from consortium.contributions import ValueMetric, round_game, value_round
from consortium.fl.core import FLError, LocalData
from consortium.plan import RunPlan
from consortium.protocol import ProjectCreate
from consortium.sim.datasets import load_dataset

HYPERPARAMETERS = {"layers": [64, 10], "optimizer": "sgd", "lr": 0.1, "local_epochs": 2, "batch_size": 16}


def spec(**overrides) -> ProjectCreate:
    fields = {"name": "valued", "algorithm": {"name": "classifier", "hyperparameters": HYPERPARAMETERS},
              "datasets": ["a/digits", "b/digits", "c/digits"], "rounds": 1, "min_nodes": 2, "seed": 3}
    return ProjectCreate.model_validate(fields | overrides)


@pytest.fixture(scope="module")
def round_inputs():
    """One round of three clients: two with real digits, one whose labels are noise."""
    digits = load_dataset("digits")
    plan = RunPlan.of(spec(), num_features=64, clients=3)
    params = plan.init_params()
    shuffle = torch.randperm(150, generator=torch.Generator().manual_seed(0))
    shares = [LocalData(digits.train.x[i * 150:(i + 1) * 150], digits.train.y[i * 150:(i + 1) * 150]) for i in range(3)]
    shares[2] = LocalData(shares[2].x, shares[2].y[shuffle])
    updates = [plan.algorithm.local_update(plan.hp, params, data, seed=i) for i, data in enumerate(shares)]
    test = LocalData(digits.test.x[:300], digits.test.y[:300])
    return plan, params, plan.init_server_state(params), updates, test


def test_the_empty_coalition_scores_the_starting_params_and_the_full_one_the_round(round_inputs):
    plan, params, state, updates, test = round_inputs
    game = round_game(plan, params, state, updates, test, ValueMetric.of("classifier"))
    expected_full = plan.close_round(params, plan.aggregate(params, updates), state)[0]
    assert game(frozenset()) == -plan.algorithm.evaluate(plan.hp, params, test).metrics["loss"]
    assert game(frozenset({0, 1, 2})) == -plan.algorithm.evaluate(plan.hp, expected_full, test).metrics["loss"]


@pytest.mark.parametrize("method", ["exact-shapley", "gtg-shapley", "leave-one-out"])
def test_a_client_with_shuffled_labels_is_worth_least(round_inputs, method):
    plan, params, state, updates, test = round_inputs
    game = round_game(plan, params, state, updates, test, ValueMetric.of("classifier"))
    values = value_round(game, 3, method, np.random.default_rng(0)).values
    assert int(np.argmin(values)) == 2


def test_lower_is_better_metrics_flip_sign_and_unknown_ones_are_named(round_inputs):
    plan, params, state, updates, test = round_inputs
    accuracy = ValueMetric.of("classifier", "accuracy")
    assert 0 < round_game(plan, params, state, updates, test, accuracy)(frozenset()) <= 1
    assert round_game(plan, params, state, updates, test, ValueMetric.of("classifier"))(frozenset()) < 0
    with pytest.raises(FLError, match="'f1'"):
        round_game(plan, params, state, updates, test, ValueMetric.of("classifier", "f1"))(frozenset())
    with pytest.raises(FLError, match="valuation.metric"):
        ValueMetric.of("gan")
    with pytest.raises(FLError, match="valuation.method"):
        value_round(lambda c: 0.0, 2, "banzhaf", np.random.default_rng(0))
