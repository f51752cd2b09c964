"""The engine contract: what :class:`~consortium.sim.simulation.Simulation` hands an engine and gets back.

An engine only decides how a round's cohort is trained and reduced; the round loop, sampling and evaluation
stay in the simulation. Kept free of any engine so that every engine and the factory can import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from consortium.fl.cohort import Cohort
from consortium.fl.core import FLError, LocalData, Params, StackedUpdates
from consortium.fl.environments import LocalEnvironment
from consortium.plan import RoundAggregate, RunPlan

Tamper = Callable[[Params, StackedUpdates], StackedUpdates]
"""``tamper(global_params, updates) -> updates``: sees every client's update (canonical order) before aggregation."""


@dataclass(frozen=True)
class Setup:
    """What every engine needs: the run's plan (algorithm, hyper-parameters, strategy), the clients' data."""

    plan: RunPlan
    train: LocalData | list[LocalEnvironment]
    """The training rows, or one environment per client."""
    device: torch.device
    tamper: Tamper | None = None
    """Rewrites the cohort's updates before aggregation (the attack harness's malicious clients)."""
    client_ids: tuple[str, ...] = ()
    """Every client of the run (SCAFFOLD: the vectorised engine keeps one control variate per client)."""

    @property
    def uses_scaffold(self) -> bool:
        """True when local training uses SCAFFOLD control variates (the engine keeps each client's c_i)."""
        return self.plan.uses_scaffold


class Engine(Protocol):
    """What every engine offers the round loop."""

    name: str

    def fit(self, params: Params, cohort: Cohort, control: Params | None = None,
            clip: float | None = None) -> RoundAggregate:
        """The cohort's local work from ``params`` (and, for SCAFFOLD, the server's control variate
        ``control``; the engine keeps each client's own ``c_i`` between rounds), reduced to what
        :meth:`RunPlan.close_round` takes; ``clip``: the round's DP clip norm under adaptive clipping (the
        reduction then carries the clients' clipped-count report)."""
        ...

    def close(self) -> None: ...


def check_control_given(setup: Setup, control: Params | None) -> None:
    if setup.uses_scaffold and control is None:
        raise FLError("SCAFFOLD is on: the engine needs the server's control variate each round")
    if control is not None and not setup.uses_scaffold:
        raise FLError("a server control variate was given but the algorithm does not use SCAFFOLD")


def client_data(
    train: LocalData | list[LocalEnvironment], cohort: Cohort, position: int
) -> LocalData | LocalEnvironment:
    """The rows of the client at ``position`` in ``cohort``, or its environment if clients are environments."""
    if not isinstance(train, LocalData):
        return train[int(cohort.rows[cohort.offsets[position]])]
    rows = torch.as_tensor(
        cohort.rows[cohort.offsets[position] : cohort.offsets[position + 1]], device=train.x.device
    )
    return LocalData(train.x[rows], None if train.y is None else train.y[rows])
