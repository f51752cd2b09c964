"""Each participant's contribution to a round, measured without pooling data.

A round's *game* gives every coalition of its participants a value: the score, on the project's validation data,
of the global model moved by the aggregate of the coalition's updates (the empty coalition scores the model the
round started from). Three measures over that game:

- :func:`exact_shapley` enumerates every coalition (``2**n`` values): the reference, for small rounds only.
- :func:`gtg_shapley` is GTG-Shapley (Liu et al., 2022): Monte-Carlo permutations where each participant leads the
  same number of them (guided sampling), a round whose whole update gains almost nothing is skipped (between-round
  truncation), and a permutation stops evaluating once its prefix is within ``eps_within`` of the full round's
  value (within-round truncation), because later members can only add noise there.
- :func:`leave_one_out` is what the round loses without each participant.

All three are pure: the caller supplies the game as a function of a coalition (a ``frozenset`` of indices) and
the functions evaluate each coalition at most once (:class:`CachedGame`). Values are summed over rounds by
:func:`accumulate`, keyed by org name, so the totals do not depend on which indices a round gave its members.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from consortium.fl.core import FLError

Coalition = frozenset[int]
Game = Callable[[Coalition], float]

MAX_EXACT_PLAYERS = 16
"""Exact Shapley evaluates 2**n coalitions; past this the estimate is the only affordable measure."""


class CachedGame:
    """A game that evaluates each coalition once and counts how many it evaluated."""

    def __init__(self, game: Game):
        self._game = game
        self._values: dict[Coalition, float] = {}

    def __call__(self, coalition: Coalition) -> float:
        if coalition not in self._values:
            value = float(self._game(coalition))
            if not math.isfinite(value):
                raise FLError(f"the valuation game scored coalition {sorted(coalition)} as {value}")
            self._values[coalition] = value
        return self._values[coalition]

    @property
    def evaluations(self) -> int:
        return len(self._values)


@dataclass(frozen=True)
class GtgOptions:
    """GTG-Shapley's knobs (defaults follow the paper's experiments, scaled for accuracy-like values in [0, 1])."""

    eps_between: float = 1e-3
    """A round whose full update changes the value by less than this is worth nothing to anyone."""
    eps_within: float = 1e-3
    """A permutation stops evaluating once its prefix is this close to the full round's value."""
    max_permutations: int = 500
    tolerance: float = 0.02
    """Stop when the estimate moved by less than this share (L1, relative) over the last ``window`` permutations."""
    window: int = 10

    def __post_init__(self) -> None:
        if not (self.eps_between >= 0 and self.eps_within >= 0 and self.tolerance > 0):
            raise FLError("GTG-Shapley needs eps_between >= 0, eps_within >= 0 and tolerance > 0")
        if self.max_permutations < 1 or self.window < 1:
            raise FLError("GTG-Shapley needs max_permutations >= 1 and window >= 1")


@dataclass(frozen=True)
class RoundValues:
    """One round's values, in the order of the round's participants, and what they cost."""

    values: np.ndarray
    evaluations: int
    permutations: int = 0
    skipped: bool = False
    """True when between-round truncation found the round worth nothing."""


def _check_players(n: int) -> None:
    if n < 1:
        raise FLError("a valuation needs at least one participant")


def exact_shapley(n: int, game: Game) -> RoundValues:
    """Shapley values of ``n`` players by enumerating all coalitions (n <= MAX_EXACT_PLAYERS)."""
    _check_players(n)
    if n > MAX_EXACT_PLAYERS:
        raise FLError(f"exact Shapley enumerates 2**n coalitions; n = {n} is over {MAX_EXACT_PLAYERS}")
    cached = CachedGame(game)
    value_of_mask = np.array([cached(frozenset(i for i in range(n) if mask >> i & 1)) for mask in range(1 << n)])
    weights = np.array([math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)])
    sizes = np.array([bin(mask).count("1") for mask in range(1 << n)])
    values = np.zeros(n)
    for player in range(n):
        bit = 1 << player
        without = np.array([mask for mask in range(1 << n) if not mask & bit])
        values[player] = float(np.sum(weights[sizes[without]] * (value_of_mask[without | bit] - value_of_mask[without])))
    return RoundValues(values=values, evaluations=cached.evaluations)


def leave_one_out(n: int, game: Game) -> RoundValues:
    """What the full round loses without each player: ``v(N) - v(N \\ {i})``."""
    _check_players(n)
    cached = CachedGame(game)
    everyone = frozenset(range(n))
    full = cached(everyone)
    values = np.array([full - cached(everyone - {player}) for player in range(n)])
    return RoundValues(values=values, evaluations=cached.evaluations)


def _guided_permutation(k: int, n: int, rng: np.random.Generator) -> list[int]:
    """The k-th permutation: player ``k mod n`` first, the others in random order."""
    leader = k % n
    rest = [player for player in range(n) if player != leader]
    return [leader, *(rest[i] for i in rng.permutation(len(rest)))]


def gtg_shapley(n: int, game: Game, rng: np.random.Generator, options: GtgOptions | None = None) -> RoundValues:
    """Estimate the round's Shapley values with guided, truncated Monte-Carlo permutations."""
    _check_players(n)
    options = options or GtgOptions()
    cached = CachedGame(game)
    empty, full = cached(frozenset()), cached(frozenset(range(n)))
    if abs(full - empty) < options.eps_between:
        return RoundValues(values=np.zeros(n), evaluations=cached.evaluations, skipped=True)
    estimate = np.zeros(n)
    history: list[np.ndarray] = []
    permutations = 0
    for k in range(options.max_permutations):
        order = _guided_permutation(k, n, rng)
        previous = empty
        for position, player in enumerate(order):
            if abs(full - previous) >= options.eps_within:
                current = cached(frozenset(order[: position + 1]))
            else:
                current = previous
            estimate[player] += (current - previous - estimate[player]) / (k + 1)
            previous = current
        permutations = k + 1
        history.append(estimate.copy())
        if _converged(history, n, options):
            break
    return RoundValues(values=estimate, evaluations=cached.evaluations, permutations=permutations)


def _converged(history: Sequence[np.ndarray], n: int, options: GtgOptions) -> bool:
    """Every player led at least once and the estimate barely moved over the last window."""
    if len(history) < max(n, options.window + 1):
        return False
    now, before = history[-1], history[-1 - options.window]
    scale = float(np.sum(np.abs(now)))
    return scale > 0 and float(np.sum(np.abs(now - before))) / scale < options.tolerance


def accumulate(totals: Mapping[str, float], names: Sequence[str], values: np.ndarray) -> dict[str, float]:
    """Add one round's values (in the order of ``names``) to running totals keyed by org name."""
    if len(names) != len(values):
        raise FLError(f"{len(values)} values for {len(names)} participants")
    if len(set(names)) != len(names):
        raise FLError("a round's participants must have distinct names")
    summed = dict(totals)
    for name, value in zip(names, values, strict=True):
        summed[name] = summed.get(name, 0.0) + float(value)
    return summed
