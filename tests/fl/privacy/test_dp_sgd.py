"""Sample-level DP-SGD: its schedule, the noise multiplier derived from the target by dp-accounting, the spec's
refusals, the per-round budget charge composing to at most the target, and Opacus training that is seeded."""

from __future__ import annotations

import math

import dp_accounting
import pytest
import torch
from dp_accounting.rdp import RdpAccountant
from pydantic import ValidationError

from consortium.fl.algorithms.classifier import Classifier
from consortium.fl.core import FLError, LocalData
from consortium.fl.privacy import budget, dp_sgd
from consortium.plan import RunPlan
from consortium.privacy_wire import PrivacySpec
from consortium.protocol import ProjectCreate

TARGET = {"mechanism": "dp_sgd", "clip": 1.0, "epsilon": 3.0, "delta": 1e-5}


def privacy(**fields) -> PrivacySpec:
    return PrivacySpec.model_validate(TARGET | fields)


def project(privacy_block: dict = TARGET, **hyper) -> ProjectCreate:
    return ProjectCreate.model_validate({
        "name": "sgd", "datasets": ["a/b", "c/d"], "rounds": 5, "privacy": privacy_block,
        "algorithm": {"name": "classifier", "hyperparameters": {"layers": [8, 4, 3]} | hyper}})


@pytest.mark.parametrize(("rows", "batch", "epochs", "rate", "steps"),
                         [(100, 32, 1, 1 / 4, 4), (96, 32, 2, 1 / 3, 6), (5, 32, 3, 1.0, 3), (33, 32, 1, 0.5, 2)])
def test_the_schedule_is_opacus_poisson_loader(rows: int, batch: int, epochs: int, rate: float, steps: int) -> None:
    assert dp_sgd.schedule(rows, batch, epochs) == (pytest.approx(rate), steps)


def test_the_noise_multiplier_meets_the_target_over_every_planned_step() -> None:
    plan = dp_sgd.resolve(privacy(), rounds=10, rows=400, batch_size=32, local_epochs=2)
    assert (plan.sampling_rate, plan.steps_per_round) == (pytest.approx(1 / 13), 26)
    total = plan.steps_per_round * 10
    step = dp_accounting.PoissonSampledDpEvent(plan.sampling_rate, dp_accounting.GaussianDpEvent(plan.noise_multiplier))
    spent = RdpAccountant().compose(dp_accounting.SelfComposedDpEvent(step, total)).get_epsilon(1e-5)
    assert spent <= 3.0
    assert plan.guarantee.epsilon == pytest.approx(spent) and plan.guarantee.rounds == total
    lower = dp_accounting.PoissonSampledDpEvent(plan.sampling_rate,
                                                dp_accounting.GaussianDpEvent(plan.noise_multiplier - 1e-3))
    assert RdpAccountant().compose(dp_accounting.SelfComposedDpEvent(lower, total)).get_epsilon(1e-5) > 3.0
    assert plan.guarantee.accountant.startswith("dp-accounting RDP") and plan.clip == 1.0


def test_more_rows_or_a_looser_target_need_less_noise() -> None:
    small = dp_sgd.resolve(privacy(), 10, 100, 32, 1)
    large = dp_sgd.resolve(privacy(), 10, 10_000, 32, 1)
    loose = dp_sgd.resolve(privacy(epsilon=10.0), 10, 100, 32, 1)
    assert large.noise_multiplier < small.noise_multiplier and loose.noise_multiplier < small.noise_multiplier


def test_the_round_charges_compose_to_at_most_the_target_under_the_budget_accountant() -> None:
    plan = dp_sgd.resolve(privacy(), rounds=8, rows=250, batch_size=25, local_epochs=1)
    charges = [plan.round_charge()] * 8
    assert charges[0].steps == 10 and charges[0].sampling_rate == pytest.approx(0.1)
    whole = budget.epsilon_of(charges, 1e-5)
    assert whole <= 3.0 * (1 + budget.BOUNDARY_SLACK)
    assert budget.epsilon_of(charges[:1], 1e-5) < whole  # a round spends a share, not the whole target


def test_a_charge_of_steps_equals_that_many_single_step_charges() -> None:
    one = budget.Charge(1.2, 0.1)
    assert budget.epsilon_of([budget.Charge(1.2, 0.1, 7)], 1e-5) == pytest.approx(
        budget.epsilon_of([one] * 7, 1e-5), rel=1e-9)
    with pytest.raises(ValueError, match="steps"):
        budget.Charge(1.2, 0.1, 0)


@pytest.mark.parametrize(("field", "value"), [("noise", "local"), ("sampling", "fixed_size"),
                                              ("noise_multiplier", 2.0),
                                              ("adaptive_clip", {"target_quantile": 0.5})])
def test_client_level_fields_are_refused_under_dp_sgd(field: str, value) -> None:
    with pytest.raises(ValidationError, match=f"{field} does not apply to mechanism 'dp_sgd'"):
        privacy(**{field: value})


@pytest.mark.parametrize(("field", "value"), [("epsilon", 0), ("delta", 1.0), ("clip", -1), ("epsilon", math.inf)])
def test_bad_targets_are_refused_by_name(field: str, value) -> None:
    with pytest.raises(ValidationError) as info:
        privacy(**{field: value})
    assert info.value.errors()[0]["loc"] == (field,)


def test_a_dp_sgd_spec_keeps_no_client_level_fields_in_its_json_and_reads_back() -> None:
    spec = project()
    dumped = spec.model_dump(mode="json")["privacy"]
    assert dumped == TARGET
    assert ProjectCreate.model_validate_json(spec.model_dump_json()) == spec


def test_the_plan_refuses_other_algorithms_scaffold_and_fedprox() -> None:
    kmeans = ProjectCreate.model_validate({"name": "k", "datasets": ["a/b"], "rounds": 2, "privacy": TARGET,
                                           "algorithm": {"name": "kmeans", "hyperparameters": {"k": 2}}})
    with pytest.raises(FLError, match="'kmeans' algorithm has not; only the classifier"):
        RunPlan.of(kmeans)
    with pytest.raises(FLError, match="SCAFFOLD"):
        RunPlan.of(project(scaffold=True))
    with pytest.raises(FLError, match="proximal_mu"):
        RunPlan.of(project(proximal_mu=0.1))
    plan = RunPlan.of(project())
    assert plan.sample_level and plan.private and plan.privacy is None
    assert plan.dp_sgd_plan_of_source(100).rows == 80  # the default validation split keeps 20 rows


def test_training_is_seeded_noised_and_needs_the_planned_rows() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(90, 8), torch.randint(0, 3, (90,))
    classifier = Classifier()
    hp = classifier.HyperParams(layers=[8, 4, 3], lr=0.5, batch_size=16)
    params = classifier.init(hp, 8, seed=0)
    plan = dp_sgd.resolve(privacy(), 5, 90, 16, 1)
    first = classifier.local_update_dp_sgd(hp, params, LocalData(x, y), 7, plan)
    again = classifier.local_update_dp_sgd(hp, params, LocalData(x, y), 7, plan)
    other = classifier.local_update_dp_sgd(hp, params, LocalData(x, y), 8, plan)
    assert all(torch.equal(first.tensors[k], again.tensors[k]) for k in params)
    assert max(float((first.tensors[k] - other.tensors[k]).abs().max()) for k in params) > 1e-4
    assert first.num_examples == 90 and 0 <= first.metrics["train_accuracy"] <= 1
    with pytest.raises(FLError, match="planned for 90 labelled rows"):
        classifier.local_update_dp_sgd(hp, params, LocalData(x[:50], y[:50]), 7, plan)


def test_empty_poisson_batches_leave_finite_params() -> None:
    classifier = Classifier()
    hp = classifier.HyperParams(layers=[8, 4, 3], lr=0.5, batch_size=1, local_epochs=2)
    plan = dp_sgd.resolve(privacy(), 2, 20, 1, 2)
    assert plan.sampling_rate == pytest.approx(0.05)  # 40 steps of rate 1/20: some draw no row at all
    x, y = torch.randn(20, 8), torch.randint(0, 3, (20,))
    for seed in range(3):
        update = classifier.local_update_dp_sgd(hp, classifier.init(hp, 8, seed=0), LocalData(x, y), seed, plan)
        assert all(bool(torch.isfinite(t).all()) for t in update.tensors.values())
