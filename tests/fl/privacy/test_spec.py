"""A project's privacy settings: bounded fields, the noise multiplier derived once, the rules that refuse a
strategy, and the privatise steps the node, the hub and the engines share."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from consortium.fl.core import FLError, Update
from consortium.fl.privacy import accountant
from consortium.fl.privacy.dp_fedavg import global_norm
from consortium.fl.privacy.spec import check_strategy, every_round, resolve
from consortium.privacy_wire import PrivacySpec
from consortium.protocol import ProjectCreate

BASE = {"clip": 1.0, "epsilon": 4.0, "delta": 1e-5}


def spec(**fields) -> PrivacySpec:
    return PrivacySpec.model_validate(BASE | fields)


@pytest.mark.parametrize(("field", "value"), [("epsilon", 0), ("epsilon", -1), ("delta", 1.0), ("delta", 0),
                                              ("clip", 0), ("noise_multiplier", 0), ("noise", "loud"),
                                              ("sampling", "bernoulli"), ("mechanism", "dp_adam")])
def test_a_bad_field_is_refused_by_name(field: str, value) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**{field: value})
    assert info.value.errors()[0]["loc"] == (field,)


def test_a_spec_without_privacy_keeps_its_json_and_one_with_it_carries_it() -> None:
    raw = {"name": "p", "algorithm": {"name": "classifier"}, "datasets": ["a/b"], "rounds": 2}
    assert "privacy" not in ProjectCreate.model_validate(raw).model_dump_json()
    dumped = ProjectCreate.model_validate(raw | {"privacy": BASE}).model_dump(mode="json")
    assert dumped["privacy"] == BASE | {"mechanism": "dp_fedavg", "noise": "central", "sampling": "poisson"}


def test_the_noise_multiplier_is_derived_to_meet_the_target_and_cached() -> None:
    plan = resolve(spec(), rounds=10, sampling_rate=0.1, population=100)
    assert plan is resolve(spec(), rounds=10, sampling_rate=0.1, population=100)
    spent = accountant.epsilon_spent(plan.noise_multiplier, 0.1, 10, 1e-5)
    assert spent <= 4.0 and plan.guarantee.epsilon == pytest.approx(spent)
    assert accountant.epsilon_spent(plan.noise_multiplier * 0.98, 0.1, 10, 1e-5) > 4.0 * 0.99
    assert every_round(spec(), 3, 4).guarantee.sampling_rate == 1.0


def test_an_explicit_multiplier_that_overspends_is_refused() -> None:
    with pytest.raises(FLError, match="privacy.noise_multiplier"):
        resolve(spec(noise_multiplier=0.3), rounds=50, sampling_rate=1.0, population=3)
    assert resolve(spec(noise_multiplier=50.0), rounds=5, sampling_rate=1.0, population=3).noise_multiplier == 50


@pytest.mark.parametrize(("privacy", "strategy", "linear", "message"), [
    (spec(noise="distributed"), "krum", False, "needs individual updates"),
    (spec(noise="distributed"), "fedavg", True, "needs secure aggregation"),
    (spec(noise="central"), "median", False, "calibrated to the mean"),
    (spec(noise="local"), "kmeans", True, "kmeans"),
])
def test_strategies_that_cannot_keep_the_guarantee_are_refused(privacy, strategy, linear, message) -> None:
    with pytest.raises(FLError, match=message):
        check_strategy(privacy, strategy, linear, uses_scaffold=False)
    check_strategy(spec(noise="local"), "median", False, uses_scaffold=False)


def test_server_updates_weigh_one_and_are_clipped_under_central_noise() -> None:
    plan = resolve(spec(clip=0.5), rounds=2, sampling_rate=1.0, population=2)
    params = {"w": torch.zeros(4)}
    updates = [Update({"w": torch.full((4,), 3.0)}, 120), Update({"w": torch.full((4,), 0.1)}, 7)]
    served, report = plan.server_updates(params, updates)
    assert [u.num_examples for u in served] == [1, 1] and report == 0.0  # one clipped (-1/2), one not (+1/2)
    assert global_norm(served[0].tensors) == pytest.approx(0.5)
    assert torch.equal(served[1].tensors["w"], updates[1].tensors["w"])
    noised = plan.noised_aggregate(params, {"w": torch.zeros(4)}, 2, seed=7)
    assert noised["w"].abs().sum() > 0
    assert torch.equal(noised["w"], plan.noised_aggregate(params, {"w": torch.zeros(4)}, 2, seed=7)["w"])


def test_stacked_privatisation_equals_each_clients_own() -> None:
    plan = resolve(spec(noise="local", clip=0.5), rounds=2, sampling_rate=1.0, population=3)
    params = {"w": torch.randn(3, 2, generator=torch.Generator().manual_seed(0))}
    trained = torch.randn(3, 3, 2, generator=torch.Generator().manual_seed(1))
    stacked = plan.privatise_stacked(params, {"w": trained}, [11, 12, 13])[0]["w"]
    for c, seed in enumerate([11, 12, 13]):
        own = plan.privatise_update(params, {"w": trained[c]}, seed)["w"]
        assert torch.equal(stacked[c], own)


def test_adaptive_clipping_pays_for_its_count_and_moves_the_clip() -> None:
    adaptive = {"target_quantile": 0.5, "learning_rate": 0.2, "count_noise_std": 5.0}
    plan = resolve(spec(noise_multiplier=2.0, epsilon=100.0, adaptive_clip=adaptive), rounds=3, sampling_rate=1.0,
                   population=4)
    assert plan.noise_multiplier == 2.0 and plan.guarantee.noise_multiplier == 2.0  # the run is accounted with it
    assert plan.update_noise_multiplier == pytest.approx((2.0 ** -2 - 10.0 ** -2) ** -0.5)
    fixed = resolve(spec(noise_multiplier=2.0, epsilon=100.0), rounds=3, sampling_rate=1.0, population=4)
    params = {"w": torch.zeros(4)}
    assert plan.noised_aggregate(params, params, 4, seed=3)["w"].std() > fixed.noised_aggregate(
        params, params, 4, seed=3)["w"].std()  # the same draws, scaled by the larger update multiplier
    assert plan.unclipped_report([0.5, 0.9, 1.5, 2.0]) == 0.0 and plan.unclipped_report([0.1, 0.2]) == 1.0
    # every update unclipped: the clip shrinks towards the median; the count's noise is seeded
    smaller = plan.next_clip(2.0, 4, seed=1)
    assert smaller < 1.0 and smaller == plan.next_clip(2.0, 4, seed=1) != plan.next_clip(2.0, 4, seed=2)
    assert plan.with_clip(0.25).clip == 0.25 and fixed.next_clip(2.0, 4, seed=1) == 1.0


@pytest.mark.parametrize(("privacy", "message"), [
    (spec(noise="local", adaptive_clip={}), "adaptive clipping needs privacy.noise = 'central'"),
    (spec(noise_multiplier=4.0, epsilon=100.0, adaptive_clip={"count_noise_std": 1.0}),
     "count_noise_std: count_noise_std = 1.0 spends the whole budget"),
])
def test_adaptive_clipping_that_cannot_be_paid_for_is_refused(privacy, message) -> None:
    with pytest.raises(FLError, match=message):
        check_strategy(privacy, "fedavg", True, uses_scaffold=False)
        resolve(privacy, rounds=3, sampling_rate=1.0, population=4)
