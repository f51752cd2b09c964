"""Valued simulated runs on digits: estimates against exact Shapley, free riders last, more data worth more."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from consortium.fl.core import FLError, LocalData
from consortium.protocol import ProjectCreate
from consortium.sim.datasets import load_dataset
from consortium.sim.valuation import noise_update, valued_run

HYPERPARAMETERS = {"layers": [64, 10], "optimizer": "sgd", "lr": 0.1, "local_epochs": 1, "batch_size": 16}


def spec(rounds: int = 3, **algorithm) -> ProjectCreate:
    return ProjectCreate.model_validate({
        "name": "valued", "rounds": rounds, "seed": 1, "min_nodes": 1, "datasets": ["x/digits"],
        "algorithm": {"name": "classifier", "hyperparameters": HYPERPARAMETERS | algorithm}})


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return data.train, LocalData(data.test.x[:300], data.test.y[:300])


def shares_of(train: LocalData, sizes: dict[str, int]) -> dict[str, LocalData]:
    shares, start = {}, 0
    for org, size in sizes.items():
        shares[org] = LocalData(train.x[start:start + size], train.y[start:start + size])
        start += size
    return shares


def test_estimates_rank_like_exact_shapley_and_a_label_noise_org_is_last(digits):
    train, test = digits
    shares = shares_of(train, {"a": 40, "b": 80, "c": 160, "d": 240, "e": 200})
    generator = torch.Generator().manual_seed(0)
    shares["e"] = LocalData(shares["e"].x, torch.randint(0, 10, (200,), generator=generator))
    run = valued_run(spec(), shares, test, ["exact-shapley", "gtg-shapley", "leave-one-out"])
    exact, estimate = run.values("exact-shapley"), run.values("gtg-shapley")
    assert spearmanr(exact, estimate).statistic >= 0.9
    assert np.abs(exact - estimate).mean() <= 0.1 * abs(exact.sum())
    assert run.orgs[int(np.argmin(exact))] == "e" == run.orgs[int(np.argmin(estimate))]
    assert run.evaluations["exact-shapley"] == 3 * 2**5
    assert run.final_metrics["accuracy"] > 0.5


def test_a_noise_sending_free_rider_is_worth_least_and_twice_the_data_is_worth_more(digits):
    train, test = digits
    shares = shares_of(train, {"small": 100, "double": 200, "rider": 100})
    run = valued_run(spec(rounds=2), shares, test, ["gtg-shapley"], behaviours={"rider": noise_update(0.1)})
    values = dict(zip(run.orgs, run.values("gtg-shapley"), strict=True))
    assert values["rider"] < values["small"] < values["double"]


def test_refusals_name_what_cannot_be_valued(digits):
    train, test = digits
    shares = shares_of(train, {"a": 50})
    with pytest.raises(FLError, match="without a share"):
        valued_run(spec(), shares, test, ["gtg-shapley"], behaviours={"ghost": noise_update()})
    with pytest.raises(FLError, match="SCAFFOLD"):
        valued_run(spec(scaffold=True), shares, test, ["gtg-shapley"])
    with pytest.raises(FLError, match="at least one org"):
        valued_run(spec(), {}, test, ["gtg-shapley"])
