"""Absurd or non-finite hyper-parameters and options are refused when parsed, naming the field, so that such
a spec is refused at proposal instead of failing its run (or exhausting the hub's memory at init)."""

from __future__ import annotations

import math

import pytest

from consortium.fl.core import MAX_MODEL_PARAMS, FLError, parse_hyperparams
from consortium.fl.registry import get_algorithm, get_strategy
from consortium.fl.registry import get_server_optimizer

CLASSIFIER = {"layers": [64, 32, 10]}
GAN = {"num_features": 64, "num_classes": 10}
PPO: dict = {}
KMEANS = {"k": 3}


@pytest.mark.parametrize(("algorithm", "base", "field", "value"), [
    ("classifier", CLASSIFIER, "layers", [64, 2**40, 10]),
    ("classifier", CLASSIFIER, "layers", [2**20, 2**20, 10]),
    ("classifier", CLASSIFIER, "layers", [8] * 65),
    ("classifier", CLASSIFIER, "batch_size", 2**40),
    ("classifier", CLASSIFIER, "local_epochs", 10**9),
    ("classifier", CLASSIFIER, "conv", {"input_shape": [3, 2**20, 8], "channels": [4]}),
    ("classifier", CLASSIFIER, "conv", {"input_shape": [1, 8, 8], "channels": [4], "kernel_size": 101}),
    ("gan", GAN, "generator_hidden", [2**30]),
    ("gan", GAN, "discriminator_hidden", [2**19, 2**19]),
    ("gan", GAN, "latent_dim", 2**40),
    ("gan", GAN, "local_steps", 2**40),
    ("gan", GAN, "batch_size", 2**40),
    ("ppo", PPO, "hidden", [2**19, 2**19]),
    ("ppo", PPO, "rollout_steps", 2**40),
    ("ppo", PPO, "epochs", 2**40),
    ("ppo", PPO, "minibatch_size", 2**40),
    ("ppo", PPO, "eval_seed", 2**70),
    ("kmeans", KMEANS, "k", 2**40),
    ("kmeans", KMEANS, "init_restarts", 2**40),
])
def test_absurd_sizes_are_refused_naming_the_field(algorithm: str, base: dict, field: str, value: object) -> None:
    with pytest.raises(FLError) as caught:
        parse_hyperparams(get_algorithm(algorithm), base | {field: value})
    assert field in str(caught.value)


def test_ppo_transitions_per_round_are_bounded() -> None:
    with pytest.raises(FLError, match="num_envs x rollout_steps"):
        parse_hyperparams(get_algorithm("ppo"), {"num_envs": 1024, "rollout_steps": 2**19})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(("algorithm", "base", "field"), [
    ("classifier", CLASSIFIER, "lr"),
    ("classifier", CLASSIFIER, "weight_decay"),
    ("classifier", CLASSIFIER, "proximal_mu"),
    ("gan", GAN, "generator_lr"),
    ("ppo", PPO, "clip"),
    ("ppo", PPO, "entropy_coef"),
])
def test_non_finite_numbers_are_refused(algorithm: str, base: dict, field: str, bad: float) -> None:
    with pytest.raises(FLError, match=field):
        parse_hyperparams(get_algorithm(algorithm), base | {field: bad})


def test_non_finite_gan_betas_are_refused() -> None:
    with pytest.raises(FLError, match="generator_betas"):
        parse_hyperparams(get_algorithm("gan"), GAN | {"generator_betas": [0.5, math.nan]})


def test_non_finite_options_are_refused() -> None:
    with pytest.raises(FLError, match="momentum"):
        get_server_optimizer("sgd", momentum=math.nan)
    with pytest.raises(FLError, match="f"):
        get_strategy("krum", f=2**70)


def test_a_model_just_under_the_limit_is_fine() -> None:
    width = math.isqrt(MAX_MODEL_PARAMS) - 2
    hp = parse_hyperparams(get_algorithm("classifier"), {"layers": [width, width]})
    assert hp.layers == [width, width]
