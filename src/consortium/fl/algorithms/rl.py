"""Federated reinforcement learning with PPO: rollouts in each client's own environment, policies averaged.

Each round a client copies the global policy and value networks, plays ``rollout_steps`` steps in each of
``num_envs`` copies of its own environment (its physics, see :mod:`consortium.fl.environments`), computes
generalised advantage estimates, and runs ``epochs`` passes of clipped-objective PPO over shuffled
mini-batches with Adam (moments start at zero every round) and global gradient-norm clipping. Only the
trained networks leave the client; the server averages them (FedAvg by default).

Params are float32 tensors named ``policy.layers.{2i}.weight|bias`` (observation -> tanh hidden layers ->
one logit per action) and ``value.layers.{2i}.weight|bias`` (observation -> tanh hidden layers -> 1).
Everything is seeded by the ``seed`` argument (a ``torch.Generator`` for actions and mini-batches,
``env.reset(seed=...)`` for the environments); the global random state is never touched. Evaluation plays
``eval_episodes`` episodes from fixed seeds, greedily by default, and reports their ``mean_return``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from consortium.fl.core import (
    MAX_LAYER_WIDTH,
    MAX_STEPS,
    BatchSize,
    Epochs,
    Evaluation,
    FLError,
    LocalData,
    Params,
    ServerInitialised,
    Steps,
    TensorSpec,
    Update,
    check_model_size,
    check_widths,
    dense_params,
    derive_seed,
    spec_of,
)
from consortium.fl.core import HyperParams as BaseHyperParams
from consortium.fl.environments import LocalEnvironment, make_env

_NETWORKS = ("policy", "value")
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
_ADVANTAGE_EPS = 1e-8


class PPOHyperParams(BaseHyperParams):
    """Network sizes, rollout lengths and PPO settings of one client's local round."""

    num_actions: int = Field(
        2, ge=2, le=MAX_LAYER_WIDTH, description="Number of discrete actions of the environment."
    )
    hidden: list[int] = Field(
        [64, 64], max_length=64, description="Hidden layer widths of both the policy and the value network."
    )
    num_envs: int = Field(
        4, ge=1, le=1024, description="Copies of the client's environment played side by side."
    )
    rollout_steps: Steps = Field(
        512, description="Steps per environment copy per round (>= 500 sees every CartPole episode end)."
    )
    epochs: Epochs = Field(4, description="Passes over the round's transitions.")
    minibatch_size: BatchSize = 256
    lr: float = Field(1e-3, gt=0)
    gamma: float = Field(0.99, gt=0, le=1, description="Discount factor.")
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip: float = Field(0.2, gt=0, description="PPO's clipping range of the probability ratio.")
    value_coef: float = Field(0.5, ge=0)
    entropy_coef: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    eval_episodes: int = Field(100, ge=1, le=100_000)
    eval_seed: int = Field(0, ge=0, lt=2**63, description="Seed of the evaluation episodes' initial states.")
    eval_greedy: bool = Field(True, description="Evaluate the most likely action (else sample it, seeded).")

    @field_validator("hidden")
    @classmethod
    def _check_hidden(cls, widths: list[int]) -> list[int]:
        if not widths:
            raise ValueError("needs at least one hidden layer")
        if any(width < 1 for width in widths):
            raise ValueError(f"every hidden width must be >= 1, got {widths}")
        check_widths(widths)
        return widths

    @model_validator(mode="after")
    def _bounded_size(self) -> PPOHyperParams:
        if self.transitions > MAX_STEPS:
            raise ValueError(
                f"num_envs x rollout_steps: {self.transitions:,} environment steps per round; "
                f"the limit is {MAX_STEPS:,}"
            )
        check_model_size("hidden", dense_params([*self.hidden, self.num_actions]))
        return self

    @property
    def transitions(self) -> int:
        """Environment steps one client collects per round."""
        return self.num_envs * self.rollout_steps


def _linear_names(hp: PPOHyperParams, network: str, obs_size: int) -> list[tuple[str, str, int, int]]:
    """(weight name, bias name, fan_in, fan_out) of each Linear layer of ``network``, in forward order."""
    widths = [obs_size, *hp.hidden, hp.num_actions if network == "policy" else 1]
    return [
        (f"{network}.layers.{2 * i}.weight", f"{network}.layers.{2 * i}.bias", fan_in, fan_out)
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths))
    ]


def params_template(hp: PPOHyperParams, obs_size: int) -> dict[str, TensorSpec]:
    """Names, shapes and dtypes of the params (policy first, then value)."""
    template = {}
    for network in _NETWORKS:
        for weight, bias, fan_in, fan_out in _linear_names(hp, network, obs_size):
            template[weight] = TensorSpec((fan_out, fan_in), torch.float32)
            template[bias] = TensorSpec((fan_out,), torch.float32)
    return template


def _check_params(hp: PPOHyperParams, params: Params, obs_size: int) -> None:
    expected = params_template(hp, obs_size)
    if spec_of(params) != expected:
        raise FLError(
            f"params do not match the PPO networks for {obs_size} observations and {hp.num_actions} actions: "
            f"expected {sorted(expected)} with shapes {[expected[n].shape for n in sorted(expected)]}"
        )


def _forward(hp: PPOHyperParams, params: Params, network: str, x: torch.Tensor) -> torch.Tensor:
    layers = _linear_names(hp, network, x.shape[-1])
    for i, (weight, bias, _, _) in enumerate(layers):
        x = F.linear(x, params[weight], params[bias])
        if i < len(layers) - 1:
            x = torch.tanh(x)
    return x


def _values(hp: PPOHyperParams, params: Params, x: torch.Tensor) -> torch.Tensor:
    return _forward(hp, params, "value", x).squeeze(-1)


class _Envs:
    """A client's environment copies, checked against the networks, closed on exit."""

    def __init__(self, hp: PPOHyperParams, environment: LocalEnvironment, count: int) -> None:
        if not isinstance(environment, LocalEnvironment):
            raise FLError(
                f"PPO trains in an environment (LocalEnvironment), got {type(environment).__name__}"
            )
        self.envs = [make_env(environment) for _ in range(count)]
        space = self.envs[0].action_space
        if getattr(space, "n", None) != hp.num_actions:
            self.close()
            raise FLError(
                f"{environment.env_id} has actions {space}, the hyper-parameters say num_actions={hp.num_actions}"
            )
        self.obs_size = int(np.prod(self.envs[0].observation_space.shape))

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        observations = [env.reset(seed=seed)[0] for env, seed in zip(self.envs, seeds, strict=True)]
        return np.stack(observations).astype(np.float32)

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class _Rollout:
    """``T`` steps of ``E`` environment copies; the rewards of time-limit cut steps include the bootstrap."""

    observations: torch.Tensor  # [T, E, obs]
    actions: torch.Tensor  # [T, E] int64
    log_probs: torch.Tensor  # [T, E] of the actions taken
    values: torch.Tensor  # [T, E]
    rewards: torch.Tensor  # [T, E]
    dones: torch.Tensor  # [T, E] 1.0 where an episode ended with the step
    last_values: torch.Tensor  # [E] value of the observation after the last step
    episode_returns: list[float]  # finished episodes
    unfinished_returns: list[float]  # episodes still running at the end


class _Episodes:
    """Running returns of each environment copy and the returns of the episodes that finished."""

    def __init__(self, count: int) -> None:
        self.running = np.zeros(count)
        self.finished: list[float] = []

    def add(self, copy: int, reward: float, ended: bool) -> None:
        self.running[copy] += reward
        if ended:
            self.finished.append(float(self.running[copy]))
            self.running[copy] = 0.0

    def unfinished(self) -> list[float]:
        return [float(r) for r in self.running if r > 0]


def _sample(log_probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One action per row, drawn with probabilities ``exp(log_probs)`` (Gumbel-max: argmax log p - log Exp(1))."""
    noise = torch.empty_like(log_probs).exponential_(generator=generator)
    return (log_probs - noise.log()).argmax(-1)


def _step(env: Any, action: int) -> tuple[np.ndarray, float, bool, np.ndarray | None]:
    """One step: the next observation (a fresh episode's after an end), the reward, whether the episode
    ended, and the last observation when the time limit cut the episode (its value is bootstrapped)."""
    obs, reward, terminated, truncated, _ = env.step(action)
    if not (terminated or truncated):
        return obs, float(reward), False, None
    return env.reset()[0], float(reward), True, None if terminated else obs


def _collect(
    hp: PPOHyperParams, params: Params, envs: _Envs, seed: int, generator: torch.Generator
) -> _Rollout:
    """Play ``hp.rollout_steps`` steps in every environment copy with actions sampled from the policy."""
    steps, count = hp.rollout_steps, len(envs.envs)
    obs = envs.reset([derive_seed(seed, "env", k) for k in range(count)])
    observations = np.zeros((steps, count, envs.obs_size), dtype=np.float32)
    rewards, dones = np.zeros((steps, count), dtype=np.float32), np.zeros((steps, count), dtype=np.float32)
    all_log_probs = torch.zeros(steps, count, hp.num_actions)
    actions = torch.zeros(steps, count, dtype=torch.int64)
    episodes = _Episodes(count)
    cut: list[tuple[int, int, np.ndarray]] = []
    with torch.no_grad():
        for t in range(steps):
            observations[t] = obs
            all_log_probs[t] = F.log_softmax(_forward(hp, params, "policy", torch.from_numpy(obs)), -1)
            actions[t] = _sample(all_log_probs[t], generator)
            for k, action in enumerate(actions[t].tolist()):
                obs[k], rewards[t, k], ended, last = _step(envs.envs[k], action)
                dones[t, k] = ended
                episodes.add(k, float(rewards[t, k]), ended)
                if last is not None:
                    cut.append((t, k, last))
        observed = torch.from_numpy(observations)
        values = _values(hp, params, observed)
        if cut:
            bootstrap = _values(
                hp, params, torch.from_numpy(np.stack([o for _, _, o in cut]).astype(np.float32))
            )
            for (t, k, _), value in zip(cut, bootstrap.tolist(), strict=True):
                rewards[t, k] += hp.gamma * value
        return _Rollout(
            observed,
            actions,
            all_log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1),
            values,
            torch.from_numpy(rewards),
            torch.from_numpy(dones),
            _values(hp, params, torch.from_numpy(obs)),
            episodes.finished,
            episodes.unfinished(),
        )


def _advantages(hp: PPOHyperParams, rollout: _Rollout) -> torch.Tensor:
    """Generalised advantage estimates ``[T, E]`` (an ended episode does not look past its last step)."""
    rewards, values, dones = rollout.rewards.numpy(), rollout.values.numpy(), rollout.dones.numpy()
    advantages = np.zeros_like(rewards)
    running = np.zeros_like(rewards[0])
    next_values = rollout.last_values.numpy()
    for t in reversed(range(rewards.shape[0])):
        alive = 1.0 - dones[t]
        delta = rewards[t] + hp.gamma * next_values * alive - values[t]
        running = delta + hp.gamma * hp.gae_lambda * alive * running
        advantages[t] = running
        next_values = values[t]
    return torch.from_numpy(advantages)


class _Adam:
    """In-place Adam steps (``torch.optim.Adam``'s rule) on a list of tensors, after global norm clipping."""

    def __init__(self, tensors: list[torch.Tensor], lr: float, max_grad_norm: float) -> None:
        self.tensors, self.lr, self.max_grad_norm = tensors, lr, max_grad_norm
        self.steps = 0
        self.first = [torch.zeros_like(t) for t in tensors]
        self.second = [torch.zeros_like(t) for t in tensors]

    @torch.no_grad()
    def __call__(self, grads: Sequence[torch.Tensor]) -> None:
        grads = list(grads)
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        torch._foreach_mul_(grads, torch.clamp(self.max_grad_norm / (total + 1e-6), max=1.0))
        beta1, beta2 = _ADAM_BETAS
        self.steps += 1
        torch._foreach_lerp_(self.first, grads, 1 - beta1)
        torch._foreach_mul_(self.second, beta2)
        torch._foreach_addcmul_(self.second, grads, grads, 1 - beta2)
        denom = torch._foreach_sqrt(self.second)
        torch._foreach_div_(denom, math.sqrt(1 - beta2**self.steps))
        torch._foreach_add_(denom, _ADAM_EPS)
        torch._foreach_addcdiv_(self.tensors, self.first, denom, -self.lr / (1 - beta1**self.steps))


def _ppo_loss(
    hp: PPOHyperParams,
    params: Params,
    obs: torch.Tensor,
    actions: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
) -> torch.Tensor:
    """Clipped surrogate + value regression - entropy bonus, on one mini-batch."""
    all_log_probs = F.log_softmax(_forward(hp, params, "policy", obs), -1)
    log_probs = all_log_probs.gather(1, actions.unsqueeze(1)).squeeze(1)
    advantages = (advantages - advantages.mean()) / (advantages.std(correction=0) + _ADVANTAGE_EPS)
    ratio = torch.exp(log_probs - old_log_probs)
    clipped = torch.clamp(ratio, 1 - hp.clip, 1 + hp.clip)
    policy_loss = -torch.minimum(ratio * advantages, clipped * advantages).mean()
    value_loss = (_values(hp, params, obs) - returns).square().mean()
    entropy = -(all_log_probs.exp() * all_log_probs).sum(-1).mean()
    return policy_loss + hp.value_coef * value_loss - hp.entropy_coef * entropy


def _optimise(hp: PPOHyperParams, params: Params, rollout: _Rollout, generator: torch.Generator) -> Params:
    """``hp.epochs`` passes of PPO over the rollout's transitions in shuffled mini-batches; new params."""
    advantages = _advantages(hp, rollout)
    returns = (advantages + rollout.values).flatten()
    obs = rollout.observations.flatten(0, 1)
    actions, old_log_probs = rollout.actions.flatten(), rollout.log_probs.flatten()
    advantages = advantages.flatten()
    trained = {name: t.detach().clone().requires_grad_(True) for name, t in params.items()}
    tensors = list(trained.values())
    step = _Adam(tensors, hp.lr, hp.max_grad_norm)
    with torch.enable_grad():
        for _ in range(hp.epochs):
            order = torch.randperm(obs.shape[0], generator=generator)
            for batch in order.split(hp.minibatch_size):
                loss = _ppo_loss(
                    hp,
                    trained,
                    obs[batch],
                    actions[batch],
                    old_log_probs[batch],
                    advantages[batch],
                    returns[batch],
                )
                step(torch.autograd.grad(loss, tensors))
    return {name: t.detach() for name, t in trained.items()}


def _train_return(rollout: _Rollout) -> float:
    """Mean return of the round's finished episodes; of the unfinished ones when none finished."""
    returns = rollout.episode_returns or rollout.unfinished_returns
    return sum(returns) / len(returns) if returns else 0.0


def _init_linear(fan_in: int, fan_out: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``nn.Linear``'s default distribution: uniform in ±1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    weight = torch.empty(fan_out, fan_in).uniform_(-bound, bound, generator=generator)
    return weight, torch.empty(fan_out).uniform_(-bound, bound, generator=generator)


def _episode_returns(hp: PPOHyperParams, params: Params, envs: _Envs, seeds: Sequence[int]) -> np.ndarray:
    """One episode in each environment copy, all played side by side; the return of each."""
    obs = envs.reset(seeds)
    returns = np.zeros(len(seeds))
    alive = np.ones(len(seeds), dtype=bool)
    generator = torch.Generator().manual_seed(hp.eval_seed)
    with torch.no_grad():
        while alive.any():
            playing = np.flatnonzero(alive)
            logits = _forward(hp, params, "policy", torch.from_numpy(obs[playing]))
            actions = logits.argmax(-1) if hp.eval_greedy else _sample(F.log_softmax(logits, -1), generator)
            for k, action in zip(playing, actions.tolist(), strict=True):
                obs[k], reward, terminated, truncated, _ = envs.envs[k].step(action)
                returns[k] += float(reward)
                alive[k] = not (terminated or truncated)
    return returns


class PPO(ServerInitialised):
    """Proximal policy optimisation; the server averages the clients' trained policy and value networks."""

    name: ClassVar[str] = "ppo"
    HyperParams: ClassVar[type[PPOHyperParams]] = PPOHyperParams
    default_strategy: ClassVar[str] = "fedavg"
    trains_in_environments: ClassVar[bool] = True
    """Clients hold a :class:`LocalEnvironment`, not rows of data."""

    def max_num_examples(self, hp: PPOHyperParams, evaluation: bool) -> int:
        """What a client's answer counts at most: the round's environment steps (``num_envs *
        rollout_steps``) for an update, ``eval_episodes`` for an evaluation."""
        return hp.eval_episodes if evaluation else hp.transitions

    def init(self, hp: PPOHyperParams, num_features: int, seed: int) -> Params:
        """Fresh networks from ``seed`` (``nn.Linear``-like); ``num_features`` is the observation size."""
        if num_features < 1:
            raise FLError(f"the observation size must be >= 1, got {num_features}")
        generator = torch.Generator().manual_seed(seed)
        params: Params = {}
        for network in _NETWORKS:
            for weight, bias, fan_in, fan_out in _linear_names(hp, network, num_features):
                params[weight], params[bias] = _init_linear(fan_in, fan_out, generator)
        return params

    def local_update(
        self, hp: PPOHyperParams, params: Params, data: LocalData | LocalEnvironment, seed: int
    ) -> Update:
        """One round of rollouts in ``data`` (the client's environment) and PPO on them.

        ``num_examples`` is the number of environment steps; ``train_return`` the mean return of the round's
        finished episodes (of the unfinished ones when none finished), ``train_episodes`` how many finished.
        """
        with _Envs(hp, data, hp.num_envs) as envs:
            _check_params(hp, params, envs.obs_size)
            generator = torch.Generator().manual_seed(seed)
            rollout = _collect(hp, params, envs, seed, generator)
        trained = _optimise(hp, params, rollout, generator)
        metrics = {
            "train_return": _train_return(rollout),
            "train_episodes": float(len(rollout.episode_returns)),
        }
        return Update(trained, hp.transitions, metrics)

    def evaluate(self, hp: PPOHyperParams, params: Params, data: LocalData | LocalEnvironment) -> Evaluation:
        """``mean_return`` over ``hp.eval_episodes`` episodes of ``data`` started from seeds of ``hp.eval_seed``."""
        with _Envs(hp, data, hp.eval_episodes) as envs:
            _check_params(hp, params, envs.obs_size)
            seeds = [derive_seed(hp.eval_seed, "episode", i) for i in range(hp.eval_episodes)]
            returns = _episode_returns(hp, params, envs, seeds)
        return Evaluation(hp.eval_episodes, {"mean_return": float(returns.mean())})
