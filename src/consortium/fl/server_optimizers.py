"""Server optimisers: how the global params move towards the round's aggregate.

After a strategy has aggregated the updates, a server optimiser treats ``params - aggregated`` as a
pseudo-gradient and takes one step from ``params`` (Reddi et al. 2021, "Adaptive Federated Optimization",
Algorithm 2, without bias correction, second moment starting at tau²). ``sgd`` with ``lr=1`` and
``momentum=0`` is plain replacement by the aggregate; with momentum it is FedAvgM (Hsu et al. 2019).

Optimisers are pure: their state is a Params dict (so it can be checkpointed as safetensors) that ``step``
takes and returns. Only floating-point tensors are optimised, in float64; the others (integer counters)
are taken from the aggregate unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from pydantic import Field

from consortium.fl import scaffold
from consortium.fl.core import FLError, Options, Params, parse_options

Slots = dict[str, torch.Tensor]
"""One tensor's optimiser state, by slot name (e.g. "m", "v")."""


@runtime_checkable
class ServerOptimizer(Protocol):
    """One server-side step per round from the current params towards the aggregate."""

    name: ClassVar[str]

    def init_state(self, params: Params) -> Params: ...

    def step(self, params: Params, aggregated: Params, state: Params) -> tuple[Params, Params]: ...


def state_key(slot: str, name: str) -> str:
    """Where the state holds slot ``slot`` (e.g. "m") of the parameter ``name``."""
    return f"{slot}/{name}"


def _target(aggregated: Params, name: str, current: torch.Tensor) -> torch.Tensor:
    if name not in aggregated:
        raise FLError(f"the aggregate has no tensor {name!r}")
    target = aggregated[name]
    if target.shape != current.shape:
        raise FLError(
            f"aggregate tensor {name!r} has shape {tuple(target.shape)}, expected {tuple(current.shape)}"
        )
    return target


class _PseudoGradientOptimizer(ABC):
    """Shared loop: per floating-point tensor, read its slots, update them with the pseudo-gradient, step."""

    name: ClassVar[str]
    Options: ClassVar[type[Options]]

    def __init__(self, **options: Any) -> None:
        self.options = parse_options(self.Options, options, f"server optimizer {self.name!r}")

    @property
    @abstractmethod
    def slots(self) -> tuple[str, ...]:
        """The names of the state tensors kept per floating-point parameter."""

    @abstractmethod
    def initial_slot(self, slot: str, like: torch.Tensor) -> torch.Tensor:
        """The starting float64 value of ``slot`` for a parameter shaped like ``like``."""

    @abstractmethod
    def update(
        self, current: torch.Tensor, gradient: torch.Tensor, target: torch.Tensor, slots: Slots
    ) -> tuple[torch.Tensor, Slots]:
        """The new float64 value of one tensor and its new slots."""

    def init_state(self, params: Params) -> Params:
        """Every slot of every floating-point tensor of ``params`` at its starting value."""
        return {
            state_key(slot, name): self.initial_slot(slot, tensor)
            for name, tensor in params.items()
            if tensor.is_floating_point()
            for slot in self.slots
        }

    def step(self, params: Params, aggregated: Params, state: Params) -> tuple[Params, Params]:
        """The next params and state; the pseudo-gradient is ``params - aggregated``."""
        new_params: Params = {}
        new_state: Params = {}
        for name, current in params.items():
            target = _target(aggregated, name, current)
            if not current.is_floating_point():
                new_params[name] = target
                continue
            slots = {slot: self._slot(state, slot, name) for slot in self.slots}
            current64, target64 = current.to(torch.float64), target.to(current.device, torch.float64)
            value, slots = self.update(current64, current64 - target64, target64, slots)
            new_params[name] = value.to(current.dtype)
            new_state.update({state_key(slot, name): tensor for slot, tensor in slots.items()})
        return new_params, new_state

    def _slot(self, state: Params, slot: str, name: str) -> torch.Tensor:
        key = state_key(slot, name)
        if key not in state:
            raise FLError(
                f"server optimizer {self.name!r} state has no {key!r}; start it with init_state(params)"
            )
        return state[key]


class SGDOptions(Options):
    lr: float = Field(default=1.0, gt=0, allow_inf_nan=False, description="server learning rate")
    momentum: float = Field(default=0.0, ge=0, lt=1, description="heavy-ball momentum (FedAvgM when > 0)")


class ServerSGD(_PseudoGradientOptimizer):
    """``b = momentum * b + g; x = x - lr * b``. Options ``lr`` (default 1.0), ``momentum`` (default 0).

    With ``lr=1`` and ``momentum=0`` the step returns the aggregate exactly (plain replacement).
    """

    name: ClassVar[str] = "sgd"
    Options: ClassVar[type[Options]] = SGDOptions

    @property
    def slots(self) -> tuple[str, ...]:
        return ("momentum",) if self.options.momentum > 0 else ()

    def initial_slot(self, slot: str, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(like.shape, dtype=torch.float64, device=like.device)

    def update(
        self, current: torch.Tensor, gradient: torch.Tensor, target: torch.Tensor, slots: Slots
    ) -> tuple[torch.Tensor, Slots]:
        lr, momentum = self.options.lr, self.options.momentum
        if momentum == 0:
            # x - 1 * (x - a) can round away from a; replacement must be exact.
            return (target if lr == 1 else current - lr * gradient), {}
        velocity = momentum * slots["momentum"] + gradient
        return current - lr * velocity, {"momentum": velocity}


class AdaptiveOptions(Options):
    beta1: float = Field(default=0.9, ge=0, lt=1, description="first-moment decay")
    tau: float = Field(default=1e-3, gt=0, allow_inf_nan=False, description="adaptivity (denominator floor)")


class AdamOptions(AdaptiveOptions):
    lr: float = Field(default=1e-2, gt=0, allow_inf_nan=False, description="server learning rate η")
    beta2: float = Field(default=0.99, ge=0, lt=1, description="second-moment decay")


class AdagradOptions(AdaptiveOptions):
    lr: float = Field(default=1e-1, gt=0, allow_inf_nan=False, description="server learning rate η")


class _AdaptiveOptimizer(_PseudoGradientOptimizer):
    """``m = β1 m + (1 - β1) g``, ``v`` per subclass, ``x = x - lr * m / (sqrt(v) + tau)``; v starts at τ²."""

    @property
    def slots(self) -> tuple[str, ...]:
        return ("m", "v")

    def initial_slot(self, slot: str, like: torch.Tensor) -> torch.Tensor:
        start = self.options.tau**2 if slot == "v" else 0.0
        return torch.full(like.shape, start, dtype=torch.float64, device=like.device)

    @abstractmethod
    def second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> torch.Tensor:
        """The new ``v`` from the old one and the squared pseudo-gradient."""

    def update(
        self, current: torch.Tensor, gradient: torch.Tensor, target: torch.Tensor, slots: Slots
    ) -> tuple[torch.Tensor, Slots]:
        beta1, lr, tau = self.options.beta1, self.options.lr, self.options.tau
        m = beta1 * slots["m"] + (1 - beta1) * gradient
        v = self.second_moment(slots["v"], gradient.square())
        return current - lr * m / (v.sqrt() + tau), {"m": m, "v": v}


class ServerAdam(_AdaptiveOptimizer):
    """FedAdam: ``v = β2 v + (1 - β2) g²``.

    Options ``lr`` 1e-2, ``beta1`` 0.9, ``beta2`` 0.99, ``tau`` 1e-3.
    """

    name: ClassVar[str] = "adam"
    Options: ClassVar[type[Options]] = AdamOptions

    def second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> torch.Tensor:
        beta2 = self.options.beta2
        return beta2 * v + (1 - beta2) * squared


class ServerYogi(_AdaptiveOptimizer):
    """FedYogi: ``v = v - (1 - β2) g² sign(v - g²)``.

    Options ``lr`` 1e-2, ``beta1`` 0.9, ``beta2`` 0.99, ``tau`` 1e-3.
    """

    name: ClassVar[str] = "yogi"
    Options: ClassVar[type[Options]] = AdamOptions

    def second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> torch.Tensor:
        return v - (1 - self.options.beta2) * squared * torch.sign(v - squared)


class ServerAdagrad(_AdaptiveOptimizer):
    """FedAdagrad: ``v = v + g²``. Options ``lr`` 1e-1, ``beta1`` 0.9, ``tau`` 1e-3."""

    name: ClassVar[str] = "adagrad"
    Options: ClassVar[type[Options]] = AdagradOptions

    def second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> torch.Tensor:
        return v + squared


class ServerStep:
    """The server's whole move per round: the optimiser's step towards the aggregate (if any) and, for
    SCAFFOLD, the control-variate step ``c <- c + sum_i(delta_c_i) / N``.

    Its state is one Params dict (what the hub checkpoints as the run's server state): the optimiser's slots
    and, under :data:`consortium.fl.scaffold.CONTROL_PREFIX`, the server's control variate ``c``.
    ``scaffold_clients`` is ``N``, the number of clients in the run, or None without SCAFFOLD.
    """

    def __init__(self, optimizer: ServerOptimizer | None = None, scaffold_clients: int | None = None) -> None:
        if scaffold_clients is not None and scaffold_clients < 1:
            raise FLError(f"SCAFFOLD needs at least one client, got {scaffold_clients}")
        self.optimizer = optimizer
        self.scaffold_clients = scaffold_clients

    @property
    def stateful(self) -> bool:
        """True when there is state to keep between rounds."""
        return self.optimizer is not None or self.scaffold_clients is not None

    def init_state(self, params: Params) -> Params:
        """The optimiser's starting slots and, with SCAFFOLD, ``c = 0``."""
        state = self.optimizer.init_state(params) if self.optimizer is not None else {}
        if self.scaffold_clients is not None:
            state |= scaffold.with_control({}, scaffold.zero_control(params))
        return state

    def control(self, state: Params) -> Params | None:
        """The server's control variate ``c`` held in ``state`` (None without SCAFFOLD)."""
        if self.scaffold_clients is None:
            return None
        _, control = scaffold.split_broadcast(state)
        if control is None:
            raise FLError("the server state holds no SCAFFOLD control variate")
        return control

    def broadcast(self, params: Params, state: Params) -> Params:
        """What a fit task carries: the params, plus ``c`` with SCAFFOLD."""
        control = self.control(state)
        return params if control is None else scaffold.with_control(params, control)

    def step(
        self, params: Params, aggregated: Params, state: Params, deltas_sum: Params | None = None
    ) -> tuple[Params, Params]:
        """The next params and state; ``deltas_sum`` is ``sum_i delta_c_i`` over the round's updates."""
        optimizer_state, control = scaffold.split_broadcast(state)
        new_state: Params = {}
        if self.optimizer is None:
            new_params = aggregated
        else:
            new_params, new_state = self.optimizer.step(params, aggregated, optimizer_state)
        if self.scaffold_clients is not None:
            if control is None:
                raise FLError("the server state holds no SCAFFOLD control variate")
            if deltas_sum is None:
                raise FLError("SCAFFOLD needs the round's sum of delta_c")
            control = scaffold.server_control_step(control, deltas_sum, self.scaffold_clients)
            new_state = scaffold.with_control(new_state, control)
        return new_params, new_state
