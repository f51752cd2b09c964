"""Federated PPO: protocol conformance, seeding, validation, the PPO pieces, and learning in CartPole."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from consortium.fl.algorithms.rl import PPO, PPOHyperParams, _Adam, _advantages, _Rollout, _sample
from consortium.fl.core import FLError, LocalData, Params, check_update, derive_seed, parse_hyperparams
from consortium.fl.registry import get_algorithm, get_strategy
from consortium.fl.environments import LocalEnvironment, physics_variants
from consortium.protocol import ProjectCreate, project_spec_from_json

EXAMPLE_SPEC = Path(__file__).resolve().parents[2] / "examples" / "rl-cartpole.json"
STANDARD = LocalEnvironment("CartPole-v1")


def hyperparams(**overrides: object) -> PPOHyperParams:
    small = {"hidden": [16], "num_envs": 2, "rollout_steps": 64, "minibatch_size": 32, "eval_episodes": 5}
    return parse_hyperparams(PPO(), small | overrides)


def equal_params(a: Params, b: Params) -> bool:
    return list(a) == list(b) and all(torch.equal(a[name], b[name]) for name in a)


def test_registered_as_ppo_with_fedavg() -> None:
    algorithm = get_algorithm("ppo")
    assert isinstance(algorithm, PPO)
    assert algorithm.default_strategy == "fedavg" and not algorithm.needs_client_init
    assert algorithm.trains_in_environments


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"num_actions": 1}, "num_actions"),
        ({"hidden": []}, "hidden: Value error, needs at least one hidden layer"),
        ({"hidden": [16, 0]}, "hidden: Value error, every hidden width must be >= 1"),
        ({"num_envs": 0}, "num_envs"),
        ({"rollout_steps": 0}, "rollout_steps"),
        ({"epochs": 0}, "epochs"),
        ({"minibatch_size": 0}, "minibatch_size"),
        ({"lr": 0}, "lr"),
        ({"gamma": 1.5}, "gamma"),
        ({"gae_lambda": -0.1}, "gae_lambda"),
        ({"clip": 0}, "clip"),
        ({"max_grad_norm": 0}, "max_grad_norm"),
        ({"eval_episodes": 0}, "eval_episodes"),
        ({"local_epochs": 3}, "local_epochs: Extra inputs are not permitted"),
    ],
)
def test_bad_hyperparameters_name_the_field(bad: dict, field: str) -> None:
    with pytest.raises(FLError, match=f"bad hyper-parameters for 'ppo': {field}"):
        hyperparams(**bad)


def test_init_names_both_networks_and_is_seeded() -> None:
    hp = hyperparams(hidden=[16, 8])
    state = torch.get_rng_state()
    params = PPO().init(hp, 4, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert equal_params(params, PPO().init(hp, 4, seed=3))
    assert not torch.equal(
        params["policy.layers.0.weight"], PPO().init(hp, 4, seed=4)["policy.layers.0.weight"]
    )
    assert {name: tuple(t.shape) for name, t in params.items()} == {
        "policy.layers.0.weight": (16, 4),
        "policy.layers.0.bias": (16,),
        "policy.layers.2.weight": (8, 16),
        "policy.layers.2.bias": (8,),
        "policy.layers.4.weight": (2, 8),
        "policy.layers.4.bias": (2,),
        "value.layers.0.weight": (16, 4),
        "value.layers.0.bias": (16,),
        "value.layers.2.weight": (8, 16),
        "value.layers.2.bias": (8,),
        "value.layers.4.weight": (1, 8),
        "value.layers.4.bias": (1,),
    }
    assert all(t.dtype == torch.float32 for t in params.values())


def test_local_update_is_bitwise_reproducible_and_leaves_input_alone() -> None:
    hp = hyperparams()
    params = PPO().init(hp, 4, seed=0)
    before = {name: t.clone() for name, t in params.items()}
    environment = LocalEnvironment("CartPole-v1", {"length": 0.6, "gravity": 11.0})
    state = torch.get_rng_state()
    first = PPO().local_update(hp, params, environment, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    second = PPO().local_update(hp, params, environment, seed=5)
    other = PPO().local_update(hp, params, environment, seed=6)
    elsewhere = PPO().local_update(hp, params, STANDARD, seed=5)
    assert equal_params(params, before)
    assert equal_params(first.tensors, second.tensors) and first.metrics == second.metrics
    assert not torch.equal(first.tensors["policy.layers.0.weight"], other.tensors["policy.layers.0.weight"])
    assert not torch.equal(
        first.tensors["policy.layers.0.weight"], elsewhere.tensors["policy.layers.0.weight"]
    )
    assert all(not torch.equal(first.tensors[name], params[name]) for name in params)
    assert all(not t.requires_grad for t in first.tensors.values())
    assert first.num_examples == 2 * 64 == PPO().max_num_examples(hp, evaluation=False)
    assert set(first.metrics) == {"train_return", "train_episodes"}
    assert first.metrics["train_episodes"] >= 2 and 1 <= first.metrics["train_return"] <= 64
    check_update(PPO().update_template(hp, params), first.tensors)


def test_evaluate_is_deterministic_and_counts_episodes() -> None:
    hp = hyperparams(eval_episodes=7)
    params = PPO().init(hp, 4, seed=0)
    evaluation = PPO().evaluate(hp, params, STANDARD)
    assert evaluation == PPO().evaluate(hp, params, STANDARD)
    assert evaluation.num_examples == 7 == PPO().max_num_examples(hp, evaluation=True)
    assert set(evaluation.metrics) == {"mean_return"}
    assert 1 <= evaluation.metrics["mean_return"] <= 500
    sampled = PPO().evaluate(hyperparams(eval_episodes=7, eval_greedy=False), params, STANDARD)
    assert sampled == PPO().evaluate(hyperparams(eval_episodes=7, eval_greedy=False), params, STANDARD)
    assert sampled != evaluation


def test_fedavg_averages_both_networks_by_environment_steps() -> None:
    hp = hyperparams()
    params = PPO().init(hp, 4, seed=0)
    updates = [
        replace(
            PPO().local_update(replace_steps(hp, steps), params, STANDARD, seed=steps), client_id=f"c{steps}"
        )
        for steps in (32, 96)
    ]
    merged = get_strategy(PPO.default_strategy).aggregate(params, updates)
    for name in params:
        expected = (64 * updates[0].tensors[name].double() + 192 * updates[1].tensors[name].double()) / 256
        assert torch.allclose(merged[name].double(), expected, atol=1e-6), name


def replace_steps(hp: PPOHyperParams, steps: int) -> PPOHyperParams:
    return parse_hyperparams(PPO(), hp.model_dump() | {"rollout_steps": steps})


def test_bad_data_and_params_are_rejected() -> None:
    hp = hyperparams()
    params = PPO().init(hp, 4, seed=0)
    with pytest.raises(FLError, match="PPO trains in an environment"):
        PPO().local_update(hp, params, LocalData(torch.zeros(3, 4)), seed=0)
    with pytest.raises(FLError, match="unknown environment 'Acrobot-v9'"):
        PPO().evaluate(hp, params, LocalEnvironment("Acrobot-v9"))
    with pytest.raises(FLError, match="unknown physics key 'wind'"):
        PPO().local_update(hp, params, LocalEnvironment("CartPole-v1", {"wind": 1.0}), seed=0)
    with pytest.raises(FLError, match="params do not match the PPO networks for 4 observations"):
        PPO().local_update(hp, PPO().init(hp, 5, seed=0), STANDARD, seed=0)
    with pytest.raises(FLError, match="num_actions=3"):
        PPO().evaluate(
            hyperparams(num_actions=3), PPO().init(hyperparams(num_actions=3), 4, seed=0), STANDARD
        )


def test_client_side_initialisation_is_not_supported() -> None:
    hp = hyperparams()
    with pytest.raises(FLError, match="initialised by the server"):
        PPO().client_init(hp, STANDARD, seed=0)
    with pytest.raises(FLError, match="initialised by the server"):
        PPO().init_from_updates(hp, [], seed=0)
    with pytest.raises(FLError, match="initialised by the server"):
        PPO().client_init_template(hp, 4)


def rollout(
    rewards: list[list[float]], dones: list[list[float]], values: list[list[float]], last: list[float]
) -> _Rollout:
    steps, count = len(rewards), len(rewards[0])
    return _Rollout(
        torch.zeros(steps, count, 4),
        torch.zeros(steps, count, dtype=torch.int64),
        torch.zeros(steps, count),
        torch.tensor(values),
        torch.tensor(rewards),
        torch.tensor(dones),
        torch.tensor(last),
        [],
        [],
    )


def test_advantages_stop_at_episode_ends_and_bootstrap_the_last_step() -> None:
    hp = hyperparams(gamma=0.5, gae_lambda=1.0)
    data = rollout(
        rewards=[[1.0], [1.0], [1.0], [1.0]],
        dones=[[0.0], [1.0], [0.0], [0.0]],
        values=[[0.0], [0.0], [0.0], [0.0]],
        last=[8.0],
    )
    # episode 1: steps 0-1 end at step 1; episode 2: steps 2-3, then the value 8 of the next observation
    assert torch.allclose(
        _advantages(hp, data), torch.tensor([[1.5], [1.0], [1.0 + 0.5 + 0.25 * 8], [1.0 + 0.5 * 8]])
    )
    hp_td = hyperparams(gamma=0.5, gae_lambda=0.0)
    with_values = replace(data, values=torch.tensor([[2.0], [2.0], [2.0], [2.0]]))
    expected_td = torch.tensor([[1 + 0.5 * 2 - 2], [1 - 2.0], [1 + 0.5 * 2 - 2], [1 + 0.5 * 8 - 2]])
    assert torch.allclose(_advantages(hp_td, with_values), expected_td)


def test_adam_with_norm_clipping_matches_torch_optim() -> None:
    generator = torch.Generator().manual_seed(0)
    ours = [torch.randn(3, 2, generator=generator), torch.randn(2, generator=generator)]
    theirs = [t.clone().requires_grad_(True) for t in ours]
    step = _Adam(ours, lr=0.01, max_grad_norm=0.5)
    reference = torch.optim.Adam(theirs, lr=0.01)
    for _ in range(5):
        grads = [torch.randn(t.shape, generator=generator) for t in ours]
        step([g.clone() for g in grads])
        for tensor, grad in zip(theirs, grads, strict=True):
            tensor.grad = grad
        torch.nn.utils.clip_grad_norm_(theirs, 0.5)
        reference.step()
    assert all(torch.allclose(a, b.detach(), atol=1e-6) for a, b in zip(ours, theirs, strict=True))


def test_actions_are_drawn_with_the_policy_probabilities() -> None:
    probabilities = torch.tensor([0.2, 0.5, 0.3])
    log_probs = probabilities.log().expand(20_000, 3)
    actions = _sample(log_probs, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(actions, minlength=3).double() / 20_000
    assert torch.allclose(frequencies, probabilities.double(), atol=0.015)


def test_a_few_rounds_in_one_environment_learn_to_balance() -> None:
    hp = hyperparams(hidden=[64, 64], num_envs=4, rollout_steps=512, minibatch_size=256, eval_episodes=20)
    params = PPO().init(hp, 4, seed=0)
    before = PPO().evaluate(hp, params, STANDARD).metrics["mean_return"]
    returns = []
    for round_number in range(3):
        update = PPO().local_update(hp, params, STANDARD, seed=derive_seed(0, round_number))
        params = update.tensors
        returns.append(update.metrics["train_return"])
    after = PPO().evaluate(hp, params, STANDARD).metrics["mean_return"]
    assert returns[0] < returns[1] < returns[2]
    assert after > 3 * before and after >= 100


def example_spec() -> ProjectCreate:
    return project_spec_from_json(EXAMPLE_SPEC.read_text())


def test_example_spec_is_a_valid_ppo_project() -> None:
    spec = example_spec()
    assert spec.algorithm.name == "ppo" and spec.strategy.name == "fedavg"
    hp = parse_hyperparams(get_algorithm(spec.algorithm.name), spec.algorithm.hyperparameters)
    assert hp.eval_episodes == 100 and spec.min_nodes == 5


def train(hp: PPOHyperParams, clients: dict[str, LocalEnvironment], rounds: int, seed: int) -> Params:
    """The reference loop: every client plays its own environment each round, FedAvg merges the networks."""
    algorithm, strategy = PPO(), get_strategy("fedavg")
    params = algorithm.init(hp, 4, seed)
    for round_number in range(1, rounds + 1):
        updates = [
            replace(
                algorithm.local_update(hp, params, env, derive_seed(seed, "fit", round_number, cid)),
                client_id=cid,
            )
            for cid, env in clients.items()
        ]
        params = strategy.aggregate(params, updates)
    return params


def test_five_orgs_with_different_physics_learn_standard_cartpole() -> None:
    """The example's 5 physics variants (±30 %), federated for 10 rounds: a mean return >= 400 over 100
    standard episodes (the full claim, >= 475 and the nodes trained alone, is in BENCHMARKS.md)."""
    spec = example_spec()
    hp = parse_hyperparams(PPO(), spec.algorithm.hyperparameters)
    variants = physics_variants(5, 0.3, seed=42)
    clients = {f"client-{i}": LocalEnvironment("CartPole-v1", physics) for i, physics in enumerate(variants)}
    params = train(hp, clients, rounds=10, seed=spec.seed)
    mean_return = PPO().evaluate(hp, params, STANDARD).metrics["mean_return"]
    assert math.isfinite(mean_return) and mean_return >= 400
