"""Malicious simulated clients: data poisoning and model poisoning for the attack harness.

An :class:`Attack` has up to two effects on the malicious clients, and none on the others:

- *data poisoning* (label flipping, the backdoor's triggered rows) rewrites the malicious clients' training
  rows; :func:`poison_partition` appends the poisoned copies to the training set and points those clients'
  partition at them, so benign clients keep exactly their rows;
- *model poisoning* (sign flip, Gaussian noise, ALIE, IPM, the backdoor's boost) rewrites the malicious
  rows of the round's :class:`~consortium.fl.core.StackedUpdates` through the simulator's ``tamper`` hook.
  A rule works on deltas from the global params, flattened to one row per client: it gets the benign
  clients' deltas (omniscient attacks read them, as in their papers) and the malicious clients' own honest
  deltas, and returns the deltas the malicious clients send.

The malicious clients are the first ``f`` client ids (``client-00`` ... ``client-03`` for n = 20, f = 4):
deterministic, and since partitions are seeded, which rows they hold still varies with the partition seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np
import torch

from consortium.fl.core import FLError, LocalData, Params, StackedUpdates, derive_seed
from consortium.sim.datasets import SimDataset
from consortium.sim.engines.base import Tamper
from consortium.sim.simulation import client_ids

DataPoisoning = Callable[[LocalData, np.random.Generator], LocalData]
"""``poison(rows, rng) -> rows``: one malicious client's training rows as it trains on them."""

ModelPoisoning = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
"""``poison(benign [B, P], malicious [M, P], generator) -> [M, P]``: the deltas the malicious clients send."""


@dataclass(frozen=True)
class Attack:
    """A named attack: what it does to the malicious clients' data and/or to their updates."""

    name: str
    description: str
    poison_data: DataPoisoning | None = None
    poison_model: ModelPoisoning | None = None
    backdoor: Backdoor | None = None
    """Set when the attack plants a backdoor, so that its success rate can be measured."""


# ------------------------------------------------------------------------------------------- model poisoning


def sign_flip(scale: float) -> ModelPoisoning:
    """Each malicious client sends its own delta reversed and scaled: ``global - scale (update - global)``."""

    def poison(benign: torch.Tensor, malicious: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return -scale * malicious

    return poison


def gaussian_noise(sigma: float) -> ModelPoisoning:
    """Each malicious client sends ``global + N(0, sigma²)`` per coordinate."""

    def poison(benign: torch.Tensor, malicious: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(malicious.shape, generator=generator, dtype=malicious.dtype)
        return sigma * noise.to(malicious.device)

    return poison


def alie_z(num_clients: int, num_malicious: int) -> float:
    """Baruch et al. 2019's z: ``s = floor(n/2 + 1) - f`` supporters needed, ``z = Φ⁻¹((n - s) / n)``."""
    supporters = math.floor(num_clients / 2 + 1) - num_malicious
    if not 0 < supporters < num_clients:
        raise FLError(f"ALIE needs 0 < floor(n/2 + 1) - f < n, got n={num_clients}, f={num_malicious}")
    return NormalDist().inv_cdf((num_clients - supporters) / num_clients)


def alie(z: float) -> ModelPoisoning:
    """A little is enough (Baruch et al. 2019): every malicious client sends ``mean - z * std`` of the benign
    deltas per coordinate (sample standard deviation), a shift small enough to pass as benign."""

    def poison(benign: torch.Tensor, malicious: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        crafted = benign.mean(0) - z * benign.std(0)
        return crafted.expand_as(malicious).clone()

    return poison


def inner_product_manipulation(epsilon: float) -> ModelPoisoning:
    """IPM (Xie et al. 2020): every malicious client sends ``-epsilon * mean`` of the benign deltas."""

    def poison(benign: torch.Tensor, malicious: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return (-epsilon * benign.mean(0)).expand_as(malicious).clone()

    return poison


def boost(factor: float) -> ModelPoisoning:
    """Model replacement (Bagdasaryan et al. 2020): a malicious client scales its own delta by ``factor``."""

    def poison(benign: torch.Tensor, malicious: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return factor * malicious

    return poison


def _delta_rows(global_params: Params, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """[C, P] float64: each client's tensors minus the global ones, flattened and concatenated."""
    return torch.cat(
        [
            (t.to(torch.float64) - global_params[name].to(t.device, torch.float64)).reshape(t.shape[0], -1)
            for name, t in tensors.items()
        ],
        dim=1,
    )


def _from_delta_rows(
    global_params: Params, tensors: dict[str, torch.Tensor], rows: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The inverse of :func:`_delta_rows`: ``global + delta`` per tensor, in each tensor's dtype."""
    out, start = {}, 0
    for name, t in tensors.items():
        size = math.prod(t.shape[1:])
        delta = rows[:, start : start + size].reshape(rows.shape[0], *t.shape[1:])
        out[name] = (global_params[name].to(t.device, torch.float64) + delta).to(t.dtype)
        start += size
    return out


def poison_updates(
    poison: ModelPoisoning,
    global_params: Params,
    updates: StackedUpdates,
    malicious: frozenset[str],
    generator: torch.Generator,
) -> StackedUpdates:
    """``updates`` with the malicious clients' rows replaced by what ``poison`` makes of the deltas."""
    is_malicious = torch.tensor([cid in malicious for cid in updates.client_ids])
    if not bool(is_malicious.any()):
        return updates
    chosen = {name: t[is_malicious.to(t.device)] for name, t in updates.tensors.items()}
    others = {name: t[~is_malicious.to(t.device)] for name, t in updates.tensors.items()}
    crafted = poison(_delta_rows(global_params, others), _delta_rows(global_params, chosen), generator)
    replaced = _from_delta_rows(global_params, chosen, crafted)
    tensors = {}
    for name, t in updates.tensors.items():
        t = t.clone()
        t[is_malicious.to(t.device)] = replaced[name]
        tensors[name] = t
    return replace(updates, tensors=tensors)


def make_tamper(attack: Attack, malicious: Sequence[str], seed: int) -> Tamper | None:
    """The simulator's ``tamper`` hook for ``attack`` (None without model poisoning); seeded noise per run."""
    poison = attack.poison_model
    if poison is None:
        return None
    ids = frozenset(malicious)
    generator = torch.Generator().manual_seed(derive_seed(seed, "attack", attack.name))

    def tamper(global_params: Params, updates: StackedUpdates) -> StackedUpdates:
        return poison_updates(poison, global_params, updates, ids, generator)

    return tamper


# -------------------------------------------------------------------------------------------- data poisoning


def label_flip(num_classes: int) -> DataPoisoning:
    """Every label ``y`` becomes ``num_classes - 1 - y``."""

    def poison(rows: LocalData, rng: np.random.Generator) -> LocalData:
        if rows.y is None:
            raise FLError("label flipping needs labelled data")
        return LocalData(rows.x.clone(), num_classes - 1 - rows.y)

    return poison


@dataclass(frozen=True)
class Backdoor:
    """A trigger (a few feature positions set to ``value``) that should make the model answer ``target``."""

    pixels: tuple[int, ...]
    target: int
    value: float = 1.0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of the rows ``x`` [n, features] with the trigger stamped on."""
        stamped = x.clone()
        stamped[:, list(self.pixels)] = self.value
        return stamped

    def poison_rows(self, fraction: float) -> DataPoisoning:
        """A seeded ``fraction`` of the rows get the trigger and the target label; the rest stay clean."""

        def poison(rows: LocalData, rng: np.random.Generator) -> LocalData:
            if rows.y is None:
                raise FLError("a backdoor needs labelled data")
            count = round(fraction * len(rows))
            chosen = torch.from_numpy(rng.permutation(len(rows))[:count])
            x, y = rows.x.clone(), rows.y.clone()
            x[chosen] = self.apply(x[chosen])
            y[chosen] = self.target
            return LocalData(x, y)

        return poison

    def triggered_test(self, test: LocalData) -> LocalData:
        """Test rows whose true label is not the target, triggered and labelled ``target``.

        A classifier's accuracy on them is the backdoor's success rate.
        """
        if test.y is None:
            raise FLError("a backdoor success rate needs labelled test data")
        keep = test.y != self.target
        x = self.apply(test.x[keep])
        return LocalData(x, torch.full((x.shape[0],), self.target, dtype=test.y.dtype, device=test.y.device))


DIGITS_TRIGGER = Backdoor(pixels=(54, 55, 62, 63), target=0)
"""The bottom-right 2x2 corner of an 8x8 digit at full intensity (1.0 after the /16 scaling), read as 0."""


def malicious_positions(num_clients: int, num_malicious: int) -> list[int]:
    """Which clients (partition positions) are malicious: the first ``num_malicious``."""
    if not 0 <= num_malicious <= num_clients:
        raise FLError(f"cannot make {num_malicious} of {num_clients} clients malicious")
    return list(range(num_malicious))


def malicious_ids(num_clients: int, num_malicious: int) -> tuple[str, ...]:
    """The client ids of :func:`malicious_positions`."""
    ids = client_ids(num_clients)
    return tuple(ids[i] for i in malicious_positions(num_clients, num_malicious))


def poison_partition(
    dataset: SimDataset,
    parts: list[np.ndarray],
    positions: Sequence[int],
    poison: DataPoisoning,
    seed: int,
) -> tuple[SimDataset, list[np.ndarray]]:
    """A dataset with the poisoned rows of the clients at ``positions`` appended, and the partition pointing
    those clients at them; every other client's rows and indices are unchanged."""
    train = dataset.train
    xs, ys, new_parts = [train.x], [train.y], list(parts)
    end = len(train)
    for position in positions:
        rows = torch.as_tensor(parts[position], dtype=torch.long)
        rng = np.random.default_rng(derive_seed(seed, "poison", position))
        poisoned = poison(LocalData(train.x[rows], None if train.y is None else train.y[rows]), rng)
        xs.append(poisoned.x)
        ys.append(poisoned.y)
        new_parts[position] = np.arange(end, end + len(poisoned), dtype=parts[position].dtype)
        end += len(poisoned)
    y = None if train.y is None else torch.cat(ys)
    return replace(dataset, train=LocalData(torch.cat(xs), y)), new_parts


# ---------------------------------------------------------------------------------------------- the catalogue


def build_attack(name: str, num_clients: int, num_malicious: int, num_classes: int = 10) -> Attack:
    """The attack called ``name`` (see :data:`ATTACK_NAMES`), tuned for n clients of which f are malicious."""
    if name == "none":
        return Attack("none", "no malicious behaviour")
    if name == "sign_flip":
        return Attack(name, "sign flip x4: global - 4 (update - global)", poison_model=sign_flip(4.0))
    if name == "gaussian":
        return Attack(name, "Gaussian noise: global + N(0, 1)", poison_model=gaussian_noise(1.0))
    if name == "label_flip":
        return Attack(
            name, f"label flipping: y -> {num_classes - 1} - y", poison_data=label_flip(num_classes)
        )
    if name == "alie":
        z = alie_z(num_clients, num_malicious)
        return Attack(name, f"ALIE: benign mean - {z:.3f} std", poison_model=alie(z))
    if name.startswith("ipm_"):
        epsilon = _ipm_epsilon(name)
        return Attack(
            name, f"IPM: -{epsilon:g} x benign mean", poison_model=inner_product_manipulation(epsilon)
        )
    if name == "backdoor":
        factor = num_clients / max(num_malicious, 1)
        return Attack(
            name,
            f"boosted backdoor: half the rows triggered -> {DIGITS_TRIGGER.target}, delta x {factor:g} (n/f)",
            poison_data=DIGITS_TRIGGER.poison_rows(0.5),
            poison_model=boost(factor),
            backdoor=DIGITS_TRIGGER,
        )
    raise FLError(f"unknown attack {name!r}; known: {', '.join(ATTACK_NAMES)}")


def _ipm_epsilon(name: str) -> float:
    try:
        epsilon = float(name.removeprefix("ipm_"))
    except ValueError:
        raise FLError(f"attack {name!r}: write IPM as ipm_EPSILON, e.g. ipm_0.1") from None
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise FLError(f"attack {name!r}: epsilon must be a finite number > 0")
    return epsilon


ATTACK_NAMES = ("none", "sign_flip", "gaussian", "label_flip", "alie", "ipm_0.1", "ipm_10", "backdoor")
