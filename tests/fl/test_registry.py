"""The registry: built-ins by name, decorators, plugins from entry points (a broken one is reported)."""

from __future__ import annotations

import subprocess
import sys
from typing import ClassVar

import pytest

from consortium.fl import registry
from consortium.fl.capabilities import (
    CohortTrainer,
    ExampleBounds,
    Previewer,
    ScaffoldClient,
    SummedCohortTrainer,
    UpdateValueChecker,
)
from consortium.fl.core import FLError
from consortium.fl.registry import (
    algorithm_names,
    get_algorithm,
    get_server_optimizer,
    get_strategy,
    register_strategy,
    strategy_names,
)
from consortium.fl.strategies import FedAvg


class _EntryPoint:
    def __init__(self, name: str, value: str, load) -> None:
        self.name, self.value, self._load = name, value, load

    def load(self):
        return self._load()


def _broken() -> type:
    raise ImportError("no module named 'torch_extras'")


class Renamed(FedAvg):
    name: ClassVar[str] = "fedavg_plugin"


@pytest.fixture
def fresh(monkeypatch):
    """A strategy registry that has not loaded its plugins yet, with two installed: one good, one broken."""
    strategies = registry._Registry("strategy", "consortium.strategies", (FedAvg,))
    monkeypatch.setattr(registry, "_STRATEGIES", strategies)
    calls = []

    def entry_points(group: str):
        calls.append(group)
        return [
            _EntryPoint("fedavg_plugin", "plugins:Renamed", lambda: Renamed),
            _EntryPoint("fancy", "plugins.fancy:Fancy", _broken),
        ]

    monkeypatch.setattr(registry, "entry_points", entry_points)
    return calls


def test_a_broken_plugin_is_reported_and_its_name_says_why(fresh) -> None:
    with pytest.warns(RuntimeWarning, match=r"strategy plugin 'fancy' \(plugins.fancy:Fancy.*ImportError"):
        assert strategy_names() == ["fedavg", "fedavg_plugin"]
    with pytest.raises(FLError, match=r"'fancy' is a plugin that failed to load: ImportError: no module"):
        get_strategy("fancy")
    with pytest.raises(FLError, match=r"unknown strategy 'nope'; known: fedavg, fedavg_plugin"):
        get_strategy("nope")
    assert isinstance(get_strategy("fedavg_plugin"), Renamed)
    assert fresh == ["consortium.strategies"]  # loaded once


def test_the_decorator_registers_a_class(fresh) -> None:
    @register_strategy
    class Mine(FedAvg):
        name: ClassVar[str] = "mine"

    with pytest.warns(RuntimeWarning):
        assert isinstance(get_strategy("mine"), Mine)


def test_server_optimizers_are_looked_up_by_name() -> None:
    assert get_server_optimizer("sgd", lr=1.0).name == "sgd"
    with pytest.raises(FLError, match=r"unknown server optimizer 'nope'; known: adagrad, adam, sgd, yogi"):
        get_server_optimizer("nope")


def test_builtins_declare_their_capabilities() -> None:
    assert set(algorithm_names()) >= {"classifier", "gan", "kmeans", "ppo"}
    classifier, gan, kmeans, ppo = (get_algorithm(n) for n in ("classifier", "gan", "kmeans", "ppo"))
    assert isinstance(classifier, SummedCohortTrainer) and isinstance(classifier, ScaffoldClient)
    assert isinstance(kmeans, CohortTrainer) and not isinstance(kmeans, SummedCohortTrainer)
    assert isinstance(kmeans, UpdateValueChecker) and not isinstance(classifier, UpdateValueChecker)
    assert isinstance(ppo, ExampleBounds) and ppo.trains_in_environments
    assert isinstance(gan, Previewer) and not isinstance(classifier, Previewer)
    assert not any(a.trains_in_environments for a in (classifier, gan, kmeans))


def test_the_core_imports_no_algorithm() -> None:
    code = "import sys, consortium.fl.core; print(sorted(m for m in sys.modules if m.startswith('consortium.fl')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['consortium.fl', 'consortium.fl.core']"
