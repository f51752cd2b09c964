"""The federated conditional GAN: protocol conformance, seeding, validation, and the non-IID digits claim."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from consortium.fl.algorithms.gan import GAN, GANHyperParams, _Adam, generate
from consortium.fl.core import FLError, LocalData, Params, check_update, derive_seed, parse_hyperparams
from consortium.fl.registry import get_algorithm, get_strategy
from consortium.fl.data import dirichlet_label_partition
from consortium.fl.gan_quality import digits_split
from consortium.protocol import ProjectCreate, project_spec_from_json

EXAMPLE_SPEC = Path(__file__).resolve().parents[2] / "examples" / "gan-digits.json"
PARTITION_SEED = 42


def hyperparams(**overrides: object) -> GANHyperParams:
    small = {
        "num_features": 4,
        "num_classes": 3,
        "latent_dim": 5,
        "generator_hidden": [8],
        "discriminator_hidden": [8, 6],
        "local_steps": 5,
        "batch_size": 8,
    }
    return parse_hyperparams(GAN(), small | overrides)


def toy_data(n: int = 40, seed: int = 0) -> LocalData:
    generator = torch.Generator().manual_seed(seed)
    return LocalData(torch.rand(n, 4, generator=generator), torch.randint(0, 3, (n,), generator=generator))


def equal_params(a: Params, b: Params) -> bool:
    return list(a) == list(b) and all(torch.equal(a[name], b[name]) for name in a)


def test_registered_as_gan_with_fedavg() -> None:
    algorithm = get_algorithm("gan")
    assert isinstance(algorithm, GAN)
    assert algorithm.default_strategy == "fedavg" and not algorithm.needs_client_init


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"num_features": 0}, "num_features"),
        ({"num_classes": -1}, "num_classes"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"generator_hidden": []}, "generator_hidden: Value error, needs at least one hidden layer"),
        ({"discriminator_hidden": [8, 0]}, "discriminator_hidden: Value error, every hidden width"),
        ({"generator_betas": [0.5, 1.0]}, "generator_betas: Value error, Adam betas must lie in"),
        ({"discriminator_lr": 0}, "discriminator_lr"),
        ({"output": "relu"}, "output"),
        ({"local_steps": 0}, "local_steps"),
        ({"discriminator_steps": 0}, "discriminator_steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"local_epochs": 3}, "local_epochs: Extra inputs are not permitted"),
    ],
)
def test_bad_hyperparameters_name_the_field(bad: dict, field: str) -> None:
    with pytest.raises(FLError, match=f"bad hyper-parameters for 'gan': {field}"):
        hyperparams(**bad)


def test_num_features_is_required() -> None:
    with pytest.raises(FLError, match="num_features: Field required"):
        parse_hyperparams(GAN(), {})


def test_init_names_both_networks_and_is_seeded() -> None:
    hp = hyperparams()
    state = torch.get_rng_state()
    params = GAN().init(hp, 4, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert equal_params(params, GAN().init(hp, 4, seed=3))
    assert not torch.equal(
        params["generator.layers.0.weight"], GAN().init(hp, 4, seed=4)["generator.layers.0.weight"]
    )
    shapes = {name: tuple(t.shape) for name, t in params.items()}
    assert shapes == {
        "generator.layers.0.weight": (8, 5 + 3),
        "generator.layers.0.bias": (8,),
        "generator.layers.2.weight": (4, 8),
        "generator.layers.2.bias": (4,),
        "discriminator.layers.0.weight": (8, 4),
        "discriminator.layers.0.bias": (8,),
        "discriminator.layers.2.weight": (6, 8),
        "discriminator.layers.2.bias": (6,),
        "discriminator.layers.4.weight": (1, 6),
        "discriminator.layers.4.bias": (1,),
        "discriminator.embedding.weight": (3, 6),
    }
    assert all(t.dtype == torch.float32 for t in params.values())


@pytest.mark.parametrize("num_classes", [None, 0])
def test_unconditional_gan_has_no_label_inputs(num_classes: int | None) -> None:
    params = GAN().init(hyperparams(num_classes=num_classes), 4, seed=0)
    assert params["generator.layers.0.weight"].shape == (8, 5)
    assert "discriminator.embedding.weight" not in params


def test_init_rejects_a_feature_count_mismatch() -> None:
    with pytest.raises(FLError, match=r"num_features \(4\) must equal the number of input features \(5\)"):
        GAN().init(hyperparams(), 5, seed=0)


def test_local_update_is_bitwise_reproducible_and_leaves_input_alone() -> None:
    hp = hyperparams(discriminator_steps=2)
    params = GAN().init(hp, 4, seed=0)
    before = {name: t.clone() for name, t in params.items()}
    data = toy_data()
    state = torch.get_rng_state()
    first = GAN().local_update(hp, params, data, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    second = GAN().local_update(hp, params, data, seed=5)
    other = GAN().local_update(hp, params, data, seed=6)
    assert equal_params(params, before)
    assert equal_params(first.tensors, second.tensors) and first.metrics == second.metrics
    assert not torch.equal(
        first.tensors["generator.layers.0.weight"], other.tensors["generator.layers.0.weight"]
    )
    assert all(not torch.equal(first.tensors[name], params[name]) for name in params)
    assert all(not t.requires_grad for t in first.tensors.values())
    assert first.num_examples == 40
    assert set(first.metrics) == {"generator_loss", "discriminator_loss"}
    assert all(math.isfinite(v) and v > 0 for v in first.metrics.values())
    check_update(GAN().update_template(hp, params), first.tensors)


def test_fedavg_averages_both_networks() -> None:
    hp = hyperparams()
    params = GAN().init(hp, 4, seed=0)
    updates = [
        replace(GAN().local_update(hp, params, toy_data(n, seed=n), seed=n), client_id=f"c{n}")
        for n in (10, 30)
    ]
    merged = get_strategy(GAN.default_strategy).aggregate(params, updates)
    for name in params:
        expected = (10 * updates[0].tensors[name].double() + 30 * updates[1].tensors[name].double()) / 40
        assert torch.allclose(merged[name].double(), expected, atol=1e-6), name


def test_adam_step_matches_torch_optim() -> None:
    generator = torch.Generator().manual_seed(0)
    ours = [torch.randn(3, 2, generator=generator), torch.randn(2, generator=generator)]
    theirs = [t.clone().requires_grad_(True) for t in ours]
    step = _Adam(ours, lr=0.01, betas=(0.5, 0.9))
    reference = torch.optim.Adam(theirs, lr=0.01, betas=(0.5, 0.9))
    for _ in range(5):
        grads = [torch.randn(t.shape, generator=generator) for t in ours]
        step(grads)
        for tensor, grad in zip(theirs, grads, strict=True):
            tensor.grad = grad
        reference.step()
    assert all(torch.allclose(a, b.detach(), atol=1e-7) for a, b in zip(ours, theirs, strict=True))


def test_unconditional_gan_trains_without_labels() -> None:
    hp = hyperparams(num_classes=None, output="tanh")
    params = GAN().init(hp, 4, seed=0)
    data = LocalData(toy_data().x * 2 - 1)
    update = GAN().local_update(hp, params, data, seed=0)
    check_update(GAN().update_template(hp, params), update.tensors)
    samples = generate(hp, update.tensors, 50, seed=0)
    assert samples.shape == (50, 4) and float(samples.abs().max()) <= 1.0
    assert set(GAN().evaluate(hp, update.tensors, data).metrics) == {
        "discriminator_real_accuracy",
        "discriminator_fake_accuracy",
    }


def test_generate_is_conditioned_seeded_and_in_range() -> None:
    hp = hyperparams()
    params = GAN().init(hp, 4, seed=0)
    labels = torch.tensor([0, 1, 2, 2])
    samples = generate(hp, params, 4, seed=1, labels=labels)
    assert samples.shape == (4, 4) and bool(((samples > 0) & (samples < 1)).all())
    assert torch.equal(samples, generate(hp, params, 4, seed=1, labels=labels))
    assert not torch.equal(samples, generate(hp, params, 4, seed=2, labels=labels))
    assert not torch.equal(samples, generate(hp, params, 4, seed=1, labels=torch.tensor([1, 2, 0, 0])))
    with pytest.raises(FLError, match=r"labels have shape \(4,\), expected \[5\]"):
        generate(hp, params, 5, seed=1, labels=labels)


def test_bad_data_and_params_are_rejected() -> None:
    hp = hyperparams()
    params = GAN().init(hp, 4, seed=0)
    data = toy_data()
    with pytest.raises(FLError, match=r"expects \[n, 4\] features"):
        GAN().local_update(hp, params, LocalData(torch.zeros(40, 5), data.y), seed=0)
    with pytest.raises(FLError, match=r"conditional GAN \(num_classes=3\) needs labels"):
        GAN().local_update(hp, params, replace(data, y=None), seed=0)
    with pytest.raises(FLError, match=r"labels must lie in \[0, 3\) .* found values in \[0, 3\]"):
        GAN().evaluate(hp, params, replace(data, y=torch.tensor([3] + [0] * 39)))
    with pytest.raises(FLError, match="integer class ids"):
        GAN().local_update(hp, params, replace(data, y=data.y.float()), seed=0)
    with pytest.raises(FLError, match="params do not match the GAN"):
        GAN().local_update(hyperparams(latent_dim=6), params, data, seed=0)


def test_client_side_initialisation_is_not_supported() -> None:
    hp = hyperparams()
    with pytest.raises(FLError, match="initialised by the server"):
        GAN().client_init(hp, toy_data(), seed=0)
    with pytest.raises(FLError, match="initialised by the server"):
        GAN().init_from_updates(hp, [], seed=0)
    with pytest.raises(FLError, match="initialised by the server"):
        GAN().client_init_template(hp, 4)


def test_empty_local_data() -> None:
    hp = hyperparams()
    params = GAN().init(hp, 4, seed=0)
    empty = LocalData(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    update = GAN().local_update(hp, params, empty, seed=0)
    assert update.num_examples == 0 and equal_params(update.tensors, params)
    assert GAN().evaluate(hp, params, empty).num_examples == 0


def test_evaluate_reports_discriminator_accuracy_on_other_data() -> None:
    hp = hyperparams()
    params = GAN().init(hp, 4, seed=0)
    evaluation = GAN().evaluate(hp, params, toy_data())
    assert evaluation == GAN().evaluate(hp, params, toy_data())
    assert set(evaluation.metrics) == {"discriminator_real_accuracy", "discriminator_fake_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in evaluation.metrics.values())


def example_spec() -> ProjectCreate:
    return project_spec_from_json(EXAMPLE_SPEC.read_text())


def test_example_spec_is_a_valid_gan_project() -> None:
    spec = example_spec()
    assert spec.algorithm.name == "gan" and spec.strategy.name == "fedavg"
    hp = parse_hyperparams(get_algorithm(spec.algorithm.name), spec.algorithm.hyperparameters)
    assert (hp.num_features, hp.num_classes) == (64, 10)


def digits_data(x: np.ndarray, y: np.ndarray) -> LocalData:
    return LocalData(torch.tensor(x), torch.tensor(y))


def train(hp: GANHyperParams, clients: dict[str, LocalData], rounds: int, seed: int) -> Params:
    """The reference loop: every client trains on its share each round, FedAvg merges both networks."""
    algorithm, strategy = GAN(), get_strategy("fedavg")
    params = algorithm.init(hp, hp.num_features, seed)
    for round_number in range(rounds):
        updates = [
            replace(
                algorithm.local_update(hp, params, data, derive_seed(seed, round_number, cid)), client_id=cid
            )
            for cid, data in clients.items()
        ]
        params = strategy.aggregate(params, updates)
    return params


def test_digits_quality_metrics_are_reported_and_deterministic() -> None:
    spec = example_spec()
    hp = parse_hyperparams(GAN(), spec.algorithm.hyperparameters)
    split = digits_split()
    test = digits_data(split.x_test, split.y_test)
    params = GAN().init(hp, 64, seed=0)
    evaluation = GAN().evaluate(hp, params, test)
    assert evaluation == GAN().evaluate(hp, params, test)
    assert set(evaluation.metrics) == {
        "discriminator_real_accuracy",
        "discriminator_fake_accuracy",
        "conditioning_accuracy",
        "frechet_distance",
    }
    assert evaluation.metrics["conditioning_accuracy"] < 0.5
    assert (
        "frechet_distance"
        not in GAN().evaluate(hp, params, digits_data(split.x_test[:1], split.y_test[:1])).metrics
    )


def test_federated_gan_on_non_iid_digits_beats_every_single_node() -> None:
    """3 nodes, label-Dirichlet(0.5): >= 0.80 conditioning accuracy, and a lower Fréchet distance than a
    generator trained for the same local steps on any one node's data alone."""
    spec = example_spec()
    hp = parse_hyperparams(GAN(), spec.algorithm.hyperparameters)
    split = digits_split()
    parts = dirichlet_label_partition(split.y_train, 3, alpha=0.5, seed=PARTITION_SEED)
    clients = {f"org-{i}": digits_data(split.x_train[p], split.y_train[p]) for i, p in enumerate(parts)}
    test = digits_data(split.x_test, split.y_test)

    federated = GAN().evaluate(hp, train(hp, clients, spec.rounds, spec.seed), test).metrics
    alone = {
        cid: GAN().evaluate(hp, train(hp, {cid: data}, spec.rounds, spec.seed), test).metrics
        for cid, data in clients.items()
    }

    assert federated["conditioning_accuracy"] >= 0.80
    for cid, metrics in alone.items():
        assert federated["frechet_distance"] < metrics["frechet_distance"], cid
