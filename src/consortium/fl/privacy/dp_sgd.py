"""Sample-level DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016) for a node's local
training, through Opacus.

Each node trains on its own rows with Poisson-sampled batches (each row joins a step independently with rate
``q = 1 / ceil(rows / batch_size)``, Opacus's ``DPDataLoader``), per-example gradients clipped to L2 norm ``C``
and Gaussian noise of standard deviation ``sigma * C`` on their sum (Opacus's ``DPOptimizer``). One round is
``local_epochs * ceil(rows / batch_size)`` such steps; a run of ``rounds`` rounds is their composition, which the
maintained accountant (:func:`consortium.fl.privacy.accountant.noise_multiplier_for`, dp-accounting's RDP
accountant, add-or-remove-one record: its cost does not grow with the steps, unlike PLD's) turns into
``sigma`` for the (epsilon, delta) target. RDP is looser than PLD, so the budget's PLD composition of the
same steps stays within the target. The unit of privacy is one
record of one dataset; every dataset gets its own sigma, from its own row count. The plan assumes the dataset
trains in every round (a source that skips rounds is only better protected).

The rest of a round is post-processing of the noisy steps: the trained params leave the node as they are, and
the hub averages them as usual. Pure apart from its seeded generators: no I/O, no clock.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from consortium.fl.core import FLError, LocalData, Params, derive_seed
from consortium.fl.privacy import accountant
from consortium.fl.privacy.accountant import PrivacyGuarantee
from consortium.fl.privacy.budget import Charge
from consortium.privacy_wire import PrivacySpec

MECHANISM = "dp_sgd"
Forward = Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]
"""An algorithm's network as a function: named tensors and feature rows -> logits."""
MECHANISM_LABEL = "DP-SGD (sample-level, Opacus per-example clipping and Gaussian noise)"


def schedule(rows: int, batch_size: int, local_epochs: int) -> tuple[float, int]:
    """``(sampling rate, steps per round)`` of DP-SGD on ``rows`` rows: Opacus's Poisson loader draws
    ``ceil(rows / batch_size)`` batches an epoch, each row in each with probability one over that."""
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise FLError(f"DP-SGD needs a dataset with at least one row, got {rows!r}")
    per_epoch = math.ceil(rows / batch_size)
    return 1.0 / per_epoch, per_epoch * local_epochs


@dataclass(frozen=True)
class DpSgdPlan:
    """DP-SGD on one dataset, resolved: its sampling rate, steps, noise multiplier and the guarantee."""

    clip: float
    noise_multiplier: float
    sampling_rate: float
    steps_per_round: int
    rounds: int
    rows: int
    batch_size: int
    guarantee: PrivacyGuarantee

    def round_charge(self) -> Charge:
        """What one round spends on the dataset's budget: ``steps_per_round`` sampled Gaussian steps."""
        return Charge(self.noise_multiplier, self.sampling_rate, self.steps_per_round)


@lru_cache(maxsize=1024)
def _calibrated(epsilon: float, delta: float, clip: float, rate: float, total: int
                ) -> tuple[float, PrivacyGuarantee]:
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # RDP's fractional orders log a warning each time they do not converge
    try:
        noise = accountant.noise_multiplier_for(epsilon, delta, rate, total, "poisson", rdp=True)
        return noise, accountant.guarantee(noise, clip, rate, total, delta, "poisson", mechanism=MECHANISM_LABEL,
                                           rdp=True)
    finally:
        absl.setLevel(level)


def resolve(privacy: PrivacySpec, rounds: int, rows: int, batch_size: int, local_epochs: int) -> DpSgdPlan:
    """The :class:`DpSgdPlan` of a dataset of ``rows`` rows trained ``local_epochs`` epochs of ``batch_size``
    in each of ``rounds`` rounds; the accountant runs once per distinct rate and step count (cached). The
    guarantee's ``rounds`` counts DP-SGD steps over the whole run. FLError prefixed ``privacy:``."""
    if privacy.mechanism != MECHANISM:
        raise FLError(f"privacy.mechanism: {privacy.mechanism!r} is not DP-SGD")
    rate, steps = schedule(rows, batch_size, local_epochs)
    total = steps * rounds
    try:
        noise, guarantee = _calibrated(privacy.epsilon, privacy.delta, privacy.clip, rate, total)
    except ValueError as exc:
        raise FLError(f"privacy: {exc} (DP-SGD on {rows} rows, {total} steps)") from exc
    return DpSgdPlan(privacy.clip, noise, rate, steps, rounds, rows, batch_size, guarantee)


def supports(algorithm: object) -> bool:
    """True when ``algorithm`` can train locally with DP-SGD (it has ``local_update_dp_sgd``)."""
    return callable(getattr(algorithm, "local_update_dp_sgd", None))


def check_run(algorithm: object, hp: object, uses_scaffold: bool) -> None:
    """FLError naming the spec field unless this algorithm and its settings can train with DP-SGD."""
    name = getattr(algorithm, "name", type(algorithm).__name__)
    if not supports(algorithm):
        raise FLError(f"privacy.mechanism: 'dp_sgd' trains with per-example gradients (Opacus), which the "
                      f"{name!r} algorithm has not; only the classifier supports it (or use 'dp_fedavg')")
    if uses_scaffold:
        raise FLError("privacy.mechanism: SCAFFOLD's control-variate correction is not wired into DP-SGD "
                      "training; turn SCAFFOLD off")
    if getattr(hp, "proximal_mu", 0.0):
        raise FLError("algorithm.hyperparameters.proximal_mu: FedProx's proximal term is not wired into DP-SGD "
                      "training; leave it 0")


class _Network(nn.Module):
    """A functional network as one module: its params registered under dot-free names, its forward the
    algorithm's own function (so DP-SGD trains exactly the network the algorithm evaluates)."""

    def __init__(self, params: Params, forward: Forward) -> None:
        super().__init__()
        self.names = list(params)
        self._fn = forward
        for i, name in enumerate(self.names):
            self.register_parameter(f"p{i}", nn.Parameter(params[name].detach().clone()))

    def named_params(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"p{i}") for i, name in enumerate(self.names)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(self.named_params(), x)


@dataclass(frozen=True)
class Trained:
    """What DP-SGD local training returns: the params and the last epoch's summed loss, correct predictions
    and rows seen (as drawn by Poisson sampling; an epoch may draw an empty batch, which Opacus steps over)."""

    params: Params
    loss_sum: float
    correct: int
    seen: int


def train(
    params: Params,
    forward: Forward,
    data: LocalData,
    make_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
    plan: DpSgdPlan,
    local_epochs: int,
    seed: int,
) -> Trained:
    """Train a copy of ``params`` with Opacus (``PrivacyEngine.make_private``: Poisson sampling, per-example
    clipping to ``plan.clip``, noise ``plan.noise_multiplier``) for ``local_epochs`` epochs of cross-entropy
    on ``data``. Sampling and noise come from generators seeded from ``seed``: the same inputs give the same
    params. FLError when ``data`` does not have the rows ``plan`` was resolved for."""
    if len(data) != plan.rows or data.y is None:
        raise FLError(f"DP-SGD was planned for {plan.rows} labelled rows, the data has {len(data)}")
    network = _Network(params, forward)
    optimizer = make_optimizer(list(network.parameters()))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.x, data.y), batch_size=plan.batch_size,
        generator=torch.Generator().manual_seed(derive_seed("dp-sgd-sampling", seed)))
    with warnings.catch_warnings():
        # Opacus warns that secure_mode is off (seeded generators are the point here) and torch that the
        # inputs need no gradient (the per-example hooks read the module's output gradients only)
        warnings.simplefilter("ignore", UserWarning)
        return _train(network, optimizer, loader, plan, local_epochs, seed)


def _train(network: _Network, optimizer: torch.optim.Optimizer, loader: torch.utils.data.DataLoader,
           plan: DpSgdPlan, local_epochs: int, seed: int) -> Trained:
    from opacus import PrivacyEngine  # heavy import, only where DP-SGD runs

    engine = PrivacyEngine(accountant="rdp", secure_mode=False)
    model, dp_optimizer, dp_loader = engine.make_private(
        module=network, optimizer=optimizer, data_loader=loader, noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.clip, poisson_sampling=True, grad_sample_mode="functorch",
        noise_generator=torch.Generator().manual_seed(derive_seed("dp-sgd-noise", seed)))
    if len(dp_loader) * local_epochs != plan.steps_per_round:
        raise FLError(f"Opacus draws {len(dp_loader)} batches an epoch, the plan {plan.steps_per_round}")
    loss_sum, correct, seen = 0.0, 0, 0
    with torch.enable_grad():
        for epoch in range(local_epochs):
            loss_sum, correct, seen = 0.0, 0, 0
            for xb, yb in dp_loader:
                dp_optimizer.zero_grad(set_to_none=True)
                logits = model(xb)
                losses = nn.functional.cross_entropy(logits, yb, reduction="none")
                losses.mean().backward()
                dp_optimizer.step()
                if epoch == local_epochs - 1:
                    loss_sum += float(losses.detach().sum())
                    correct += int((logits.detach().argmax(dim=-1) == yb).sum())
                    seen += len(yb)
    trained = {name: t.detach().clone() for name, t in network.named_params().items()}
    return Trained(trained, loss_sum, correct, seen)
