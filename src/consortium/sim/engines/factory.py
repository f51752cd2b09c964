"""``make_engine``: the engine a run asks for, by name; the only module that knows every engine."""

from __future__ import annotations

from collections.abc import Callable

from consortium.fl.core import FLError, LocalData
from consortium.sim.engines.base import Engine, Setup
from consortium.sim.engines.loop import LoopEngine
from consortium.sim.engines.ray import RayEngine
from consortium.sim.engines.vectorized import VectorizedEngine, supports_vectorized
from consortium.sim.spec import SimulationSettings


def make_engine(
    name: str, setup: Setup, settings: SimulationSettings, notify: Callable[[str], None] | None = None
) -> Engine:
    """The engine called ``name`` (``vectorized``, ``loop`` or ``ray``).

    An algorithm without a batched local update, or a DP-SGD run, runs on the loop engine instead of
    ``vectorized``; ``notify`` (if given) is told so.
    """
    if name == "loop":
        return LoopEngine(setup)
    if name == "vectorized":
        if not supports_vectorized(setup.plan.algorithm):
            if notify is not None:
                notify(
                    f"the {setup.plan.algorithm.name!r} algorithm has no batched local update: "
                    "falling back to the loop engine (same results, one client at a time)"
                )
            return LoopEngine(setup)
        if setup.plan.sample_level:
            if notify is not None:
                notify("DP-SGD trains each client with Opacus, one at a time: falling back to the loop engine")
            return LoopEngine(setup)
        return VectorizedEngine(setup, settings.chunk_clients)
    if name == "ray":
        if not isinstance(setup.train, LocalData):
            raise FLError("the ray engine does not run environment clients yet; use --engine loop")
        if setup.uses_scaffold:
            raise FLError(
                "the ray engine does not keep SCAFFOLD's per-client control variates yet; "
                "use --engine vectorized or loop"
            )
        return RayEngine(setup, settings)
    raise FLError(f"unknown engine {name!r}; use vectorized, loop or ray")
