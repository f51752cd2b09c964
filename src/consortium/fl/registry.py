"""Algorithms, strategies and server optimisers by the names a project spec (JSON) gives them.

This module is the fl package's composition root: it imports the built-ins (and the GAN's digits measure,
:mod:`consortium.fl.gan_quality`), while they import only :mod:`consortium.fl.core`, so no import circle
runs through it. Third parties add their own with the ``register_*`` decorators, or as installed plugins
under the entry-point groups ``consortium.algorithms``, ``consortium.strategies`` and
``consortium.server_optimizers`` (each entry point names a class with a ``name``). Plugins load once, on the
first lookup; one that fails to load is reported with a warning and its name then raises an FLError saying
why, so a broken plugin neither takes the core down nor disappears silently.
"""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from consortium.fl import gan_quality  # noqa: F401 - registers the GAN's digits measure
from consortium.fl.algorithms.classifier import Classifier
from consortium.fl.algorithms.gan import GAN
from consortium.fl.algorithms.kmeans import KMeans
from consortium.fl.algorithms.rl import PPO
from consortium.fl.core import Algorithm, FLError, Strategy
from consortium.fl.server_optimizers import (
    ServerAdagrad,
    ServerAdam,
    ServerOptimizer,
    ServerSGD,
    ServerStep,
    ServerYogi,
)
from consortium.fl.robust import Bulyan, CenteredClipping, Krum, Median, MultiKrum, TrimmedMean
from consortium.fl.strategies import FedAvg, KMeansMerge

T = TypeVar("T", bound=type)


class _Registry(Generic[T]):
    """The classes of one kind by name, plus the plugins of that kind that failed to load."""

    def __init__(self, kind: str, group: str, builtins: tuple[T, ...]) -> None:
        self.kind = kind
        self.group = group
        self.classes: dict[str, T] = {cls.name: cls for cls in builtins}
        self.broken: dict[str, str] = {}
        self._plugins_loaded = False

    def register(self, cls: T) -> T:
        self.classes[cls.name] = cls
        self.broken.pop(cls.name, None)
        return cls

    def load_plugins(self) -> None:
        """Register this kind's entry points, once; a failing one is warned about and remembered."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            try:
                self.register(ep.load())
            except Exception as exc:  # a plugin's own bug: reported, never fatal to the core
                self.broken[ep.name] = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"the {self.kind} plugin {ep.name!r} ({ep.value}, group {self.group}) failed to load: "
                    f"{type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=3,
                )

    def lookup(self, name: str) -> T:
        """The class registered under ``name``; FLError saying why there is none."""
        self.load_plugins()
        if name in self.classes:
            return self.classes[name]
        if name in self.broken:
            raise FLError(f"the {self.kind} {name!r} is a plugin that failed to load: {self.broken[name]}")
        raise FLError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")

    def names(self) -> list[str]:
        self.load_plugins()
        return sorted(self.classes)


_ALGORITHMS: _Registry[type] = _Registry(
    "algorithm", "consortium.algorithms", (Classifier, GAN, KMeans, PPO)
)
_STRATEGIES: _Registry[type] = _Registry(
    "strategy",
    "consortium.strategies",
    (FedAvg, KMeansMerge, Median, TrimmedMean, Krum, MultiKrum, Bulyan, CenteredClipping),
)
_SERVER_OPTIMIZERS: _Registry[type] = _Registry(
    "server optimizer",
    "consortium.server_optimizers",
    (ServerSGD, ServerAdam, ServerYogi, ServerAdagrad),
)


def register_algorithm(cls: T) -> T:
    """Class decorator: make an algorithm available to project specs under ``cls.name``."""
    return _ALGORITHMS.register(cls)


def register_strategy(cls: T) -> T:
    """Class decorator: make a strategy available to project specs under ``cls.name``."""
    return _STRATEGIES.register(cls)


def register_server_optimizer(cls: T) -> T:
    """Class decorator: make a server optimiser available to project specs under ``cls.name``."""
    return _SERVER_OPTIMIZERS.register(cls)


def get_algorithm(name: str) -> Algorithm:
    """The algorithm registered under ``name``; FLError naming the known ones otherwise."""
    return _ALGORITHMS.lookup(name)()


def get_strategy(name: str, **options: Any) -> Strategy:
    """A strategy instance built from its registered name and options."""
    cls = _STRATEGIES.lookup(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise FLError(f"bad options for strategy {name!r}: {exc}") from exc


def get_server_optimizer(name: str, **options: Any) -> ServerOptimizer:
    """A server optimiser built from its registered name and options; FLError naming a bad one."""
    return _SERVER_OPTIMIZERS.lookup(name)(**options)


def server_step(
    optimizer_name: str | None, optimizer_options: dict[str, Any], scaffold_clients: int | None
) -> ServerStep:
    """A project's server step: its server optimiser (by name, or none) and SCAFFOLD's ``N`` (or None)."""
    optimizer = None if optimizer_name is None else get_server_optimizer(optimizer_name, **optimizer_options)
    return ServerStep(optimizer, scaffold_clients)


def algorithm_names() -> list[str]:
    return _ALGORITHMS.names()


def strategy_names() -> list[str]:
    return _STRATEGIES.names()


def server_optimizer_names() -> list[str]:
    return _SERVER_OPTIMIZERS.names()
