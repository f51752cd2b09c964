"""SCAFFOLD control variates (Karimireddy et al. 2020, "SCAFFOLD: Stochastic Controlled Averaging", option
II).

The server keeps a control variate ``c`` and every client ``i`` its own ``c_i`` (both shaped like the params,
starting at zero). A client's local step is ``y <- y - lr * (grad(y) + c - c_i)``; after its ``K`` steps it
sends ``delta_y = y - x`` (here: the trained params ``y``, as every classifier update does) and

    ``delta_c = c_i+ - c_i = (x - y) / (K * lr) - c``,

and keeps ``c_i+ = c_i + delta_c``. The server's control moves by ``c <- c + sum_i(delta_c_i) / N``
(= ``(|S| / N) * mean(delta_c)``), ``N`` being the number of clients that take part in the run, so ``c``
stays the mean of all clients' ``c_i``. The params move as the strategy and server optimiser say.

Names on the wire: the params a fit task carries are the global params plus ``c`` under
:data:`CONTROL_PREFIX` (the *broadcast*); an update carries the trained params plus ``delta_c`` under
:data:`DELTA_PREFIX`. ``c_i`` never leaves its client. Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from consortium.fl.capabilities import ScaffoldClient
from consortium.fl.core import FLError, Params, Update

CONTROL_PREFIX = "scaffold.c/"
"""A broadcast's tensor ``scaffold.c/<name>`` is the server control variate of the param ``<name>``."""

DELTA_PREFIX = "scaffold.delta_c/"
"""An update's tensor ``scaffold.delta_c/<name>`` is the client's control change for the param ``<name>``."""


@dataclass(frozen=True)
class Controls:
    """The control variates one local update uses: the server's ``c`` and the client's own ``c_i``."""

    server: Params
    client: Params


def uses_scaffold(algorithm: Any, hp: Any) -> bool:
    """True when ``algorithm`` with hyper-parameters ``hp`` trains with SCAFFOLD control variates."""
    return isinstance(algorithm, ScaffoldClient) and bool(algorithm.uses_scaffold(hp))


def zero_control(params: Mapping[str, torch.Tensor]) -> Params:
    """A control variate at its start: zeros shaped like every floating-point tensor of ``params``."""
    return {name: torch.zeros_like(t) for name, t in params.items() if t.is_floating_point()}


def check_control(
    control: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor], owner: str
) -> None:
    """FLError naming ``owner`` unless ``control`` has exactly the floating tensors of ``params``, alike."""
    expected = {name: t for name, t in params.items() if t.is_floating_point()}
    if set(control) != set(expected):
        raise FLError(
            f"{owner} has tensors {sorted(control)}, "
            f"expected one per floating-point param: {sorted(expected)}"
        )
    for name, like in expected.items():
        got = control[name]
        if got.shape != like.shape or got.dtype != like.dtype:
            raise FLError(
                f"{owner} tensor {name!r} is {got.dtype} {tuple(got.shape)}, "
                f"expected {like.dtype} {tuple(like.shape)}"
            )


def with_control(params: Params, control: Params) -> Params:
    """A fit task's broadcast: the global params and, under :data:`CONTROL_PREFIX`, the server's ``c``."""
    return params | {CONTROL_PREFIX + name: t for name, t in control.items()}


def split_broadcast(received: Mapping[str, torch.Tensor]) -> tuple[Params, Params | None]:
    """The global params and the server's ``c`` (None when the broadcast carries none)."""
    params = {name: t for name, t in received.items() if not name.startswith(CONTROL_PREFIX)}
    control = {
        name[len(CONTROL_PREFIX) :]: t for name, t in received.items() if name.startswith(CONTROL_PREFIX)
    }
    return params, (control or None)


def split_deltas(
    tensors: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """An update's (or a stacked cohort's) tensors: the params part and the ``delta_c`` part (unprefixed)."""
    model = {name: t for name, t in tensors.items() if not name.startswith(DELTA_PREFIX)}
    deltas = {name[len(DELTA_PREFIX) :]: t for name, t in tensors.items() if name.startswith(DELTA_PREFIX)}
    return model, deltas


def prefixed_deltas(deltas: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``delta_c`` tensors under their update names (:data:`DELTA_PREFIX`)."""
    return {DELTA_PREFIX + name: t for name, t in deltas.items()}


def corrections(controls: Controls, names: Sequence[str]) -> list[torch.Tensor]:
    """``c - c_i`` for each param of ``names``: what SCAFFOLD adds to every local gradient.

    ``c`` has the param's shape; ``c_i`` the same shape or a leading client axis (a cohort's stacked
    controls), in which case the correction is stacked too.
    """
    return [controls.server[name] - controls.client[name] for name in names]


def control_deltas(
    server: Mapping[str, torch.Tensor],
    start: Mapping[str, torch.Tensor],
    trained: Mapping[str, torch.Tensor],
    steps: torch.Tensor,
    lr: float,
) -> dict[str, torch.Tensor]:
    """``delta_c = (x - y) / (K * lr) - c`` for C clients at once.

    ``start`` (x) and ``server`` (c) have the params' shapes, ``trained`` (y) a leading client axis
    ``[C, ...]`` and ``steps`` (K) is ``[C]``. A client that took no step has ``delta_c = 0``: it learnt
    nothing new.
    """
    deltas = {}
    took_steps = steps > 0
    scale = torch.where(took_steps, 1.0 / (steps.to(torch.float64).clamp_min(1) * lr), 0.0)
    for name, y in trained.items():
        shape = (-1,) + (1,) * (y.dim() - 1)
        estimate = (start[name] - y) * scale.to(y.dtype).view(shape)
        keep = took_steps.view(shape)
        deltas[name] = torch.where(keep, estimate - server[name], torch.zeros_like(estimate))
    return deltas


def advanced(client: Mapping[str, torch.Tensor], deltas: Mapping[str, torch.Tensor]) -> Params:
    """The client's next control variate: ``c_i+ = c_i + delta_c``."""
    return {name: client[name] + deltas[name] for name in client}


def delta_sum(updates: Sequence[Update]) -> Params:
    """Float64 ``sum_i delta_c_i`` over the updates (in canonical client order), by param name."""
    total: Params = {}
    for update in sorted(updates, key=lambda u: u.client_id):
        _, deltas = split_deltas(update.tensors)
        if not deltas:
            raise FLError(f"the update from {update.client_id or 'a client'} carries no SCAFFOLD delta_c")
        for name, t in deltas.items():
            total[name] = total[name] + t.to(torch.float64) if name in total else t.to(torch.float64)
    return total


def stacked_delta_sum(deltas: Mapping[str, torch.Tensor]) -> Params:
    """Float64 ``sum_i delta_c_i`` of stacked ``[C, ...]`` deltas."""
    return {name: t.to(torch.float64).sum(dim=0) for name, t in deltas.items()}


def merge_sums(a: Params | None, b: Params) -> Params:
    """The sum of two partial ``delta_c`` sums (``a`` may be None: nothing summed yet)."""
    return dict(b) if a is None else {name: a[name] + b[name] for name in a}


def server_control_step(control: Params, deltas_sum: Mapping[str, torch.Tensor], num_clients: int) -> Params:
    """``c + sum_i(delta_c_i) / N``, computed in float64 and cast back to ``c``'s dtype."""
    if num_clients < 1:
        raise FLError(f"SCAFFOLD needs the number of clients N >= 1, got {num_clients}")
    missing = sorted(set(control) - set(deltas_sum))
    if missing:
        raise FLError(f"the delta_c sums have no tensor for {missing}")
    return {
        name: (c.to(torch.float64) + deltas_sum[name].to(c.device, torch.float64) / num_clients).to(c.dtype)
        for name, c in control.items()
    }
