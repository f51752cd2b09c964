"""Simulated clients that are environments: each client plays its own physics variant of a gymnasium env.

With ``SimulationSettings.dataset = "env:CartPole-v1"`` client ``i`` gets the ``i``-th of
:func:`~consortium.fl.environments.physics_variants` (``clients``, ``physics_spread``, ``partition_seed``)
instead of a share of a dataset's rows, and every round is evaluated on the standard (default-physics)
environment. Nothing is downloaded: the environments are gymnasium's built-in ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from consortium.fl.core import Algorithm, FLError
from consortium.fl.environments import (
    LocalEnvironment,
    default_physics,
    full_physics,
    observation_size,
    physics_variants,
)

ENV_PREFIX = "env:"
_GYMNASIUM_LICENSE = "MIT"


def is_environment_source(source: str) -> bool:
    """True for a simulation source that names an environment (``env:ID``) rather than a dataset."""
    return source.startswith(ENV_PREFIX)


@dataclass(frozen=True)
class SimEnvironments:
    """The environment counterpart of a simulation dataset: one environment per client, a standard one to test."""

    name: str
    train: list[LocalEnvironment]
    """client ``i`` plays ``train[i]``"""
    test: LocalEnvironment
    spread: float
    license: str = _GYMNASIUM_LICENSE

    @property
    def num_features(self) -> int:
        """The observation size: what the algorithm's ``init`` takes as its number of features."""
        return observation_size(self.test)

    def parts(self) -> list[np.ndarray]:
        """Client ``i`` holds one "row": the index of its environment in :attr:`train`."""
        return [np.array([i], dtype=np.int64) for i in range(len(self.train))]

    def describe(self) -> dict[str, Any]:
        """The environments for the JSON summary and the model card: every client's full physics."""
        return {
            "name": self.name,
            "physics_spread": self.spread,
            "clients": [full_physics(environment) for environment in self.train],
            "evaluation": full_physics(self.test),
            "license": self.license,
        }


def load_environments(source: str, clients: int, spread: float, seed: int) -> SimEnvironments:
    """``clients`` physics variants of the environment named by ``source`` (``env:ID``), seeded by ``seed``."""
    env_id = source.removeprefix(ENV_PREFIX)
    default_physics(env_id)
    variants = physics_variants(clients, spread, seed, env_id)
    return SimEnvironments(
        source,
        [LocalEnvironment(env_id, physics) for physics in variants],
        LocalEnvironment(env_id),
        spread,
    )


def check_algorithm_fits(algorithm: Algorithm, source: Any) -> None:
    """FLError when an algorithm that trains in environments gets a dataset, or the other way round."""
    in_environments = algorithm.trains_in_environments
    if in_environments and not isinstance(source, SimEnvironments):
        raise FLError(
            f"the {algorithm.name!r} algorithm trains in environments: use a dataset like "
            f"{ENV_PREFIX}CartPole-v1, not {source.name!r}"
        )
    if not in_environments and isinstance(source, SimEnvironments):
        raise FLError(
            f"the {algorithm.name!r} algorithm trains on rows of data, not in environments ({source.name!r})"
        )
