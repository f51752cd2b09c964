"""Empirical privacy auditing in one training run (Steinke, Nasr and Jagielski, "Privacy Auditing with One (1)
Training Run", NeurIPS 2023, arXiv:2305.08846), pure: canaries, their scores, guesses and the epsilon bound.

The audit inserts ``m`` canaries, each independently included with probability 1/2 (``S_i = +1`` in, ``-1``
out), trains once, scores each canary, and guesses: the ``k_in`` highest scores IN, the ``k_out`` lowest OUT,
abstaining on the rest. With ``r`` guesses of which ``v`` are correct, the paper's Theorem 5.2 bounds, for any
``(epsilon, delta)``-DP training, the chance of ``v`` or more correct guesses::

    P[W >= v] <= f(v) + 2 m delta * max_{i = 1..m} (f(v - i) - f(v)) / i,
    f(v) = P[Binomial(r, e^eps / (1 + e^eps)) >= v]

(for ``delta = 0`` the first term alone; ``e^eps / (1 + e^eps)`` is the accuracy of eps-DP randomised
response). :func:`epsilon_lower_bound` is the largest epsilon whose p-value is below ``1 - confidence``: the
training is not ``(epsilon, delta)``-DP for any smaller epsilon, with that confidence. Since ``f(v - i)`` is 1
for ``i >= v``, the maximum is reached at some ``i <= v``.

Client-level canaries here: a canary is a client whose update is a fixed random unit direction times the clip
norm ``C``; its score is the inner product of the run's final model change with that direction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.stats
import torch

EPSILON_CEILING = 100.0
"""The search for the bound stops here (no finite audit of m <= 10^6 canaries gets near it)."""


def _check_counts(m: int, r: int, v: int) -> None:
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """An upper bound on the chance of ``v`` or more correct guesses out of ``r`` under ``(epsilon, delta)``-DP
    (Theorem 5.2 of Steinke, Nasr and Jagielski 2023)."""
    _check_counts(m, r, v)
    if not (epsilon >= 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon}")
    if not 0 <= delta <= 1:
        raise ValueError(f"delta must lie in [0, 1], got {delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(scipy.stats.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    below = np.cumsum(scipy.stats.binom.pmf(v - np.arange(1, v + 1), r, q))  # P[v - i <= B < v], i = 1..v
    worst = float(np.max(below / np.arange(1, v + 1)))
    return min(tail + 2 * m * delta * worst, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, confidence: float = 0.95,
                        tolerance: float = 1e-4) -> float:
    """The largest epsilon (within ``tolerance``, rounded down) that the result refutes at ``confidence``:
    0 when even epsilon = 0 is not refuted."""
    _check_counts(m, r, v)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    alpha = 1.0 - confidence
    if p_value(m, r, v, 0.0, delta) >= alpha:
        return 0.0
    low, high = 0.0, 1.0
    while p_value(m, r, v, high, delta) < alpha:
        low, high = high, 2 * high
        if high > EPSILON_CEILING:
            return EPSILON_CEILING
    while high - low > tolerance:
        middle = (low + high) / 2
        low, high = (middle, high) if p_value(m, r, v, middle, delta) < alpha else (low, middle)
    return low


def draw_membership(m: int, seed: int) -> np.ndarray:
    """Which of ``m`` canaries are IN: each independently with probability 1/2."""
    return np.random.default_rng(seed).random(m) < 0.5


def canary_directions(m: int, dim: int, seed: int) -> torch.Tensor:
    """``m`` random unit vectors in ``R^dim`` (float64, rows), from a seeded generator."""
    if m < 1 or dim < 1:
        raise ValueError(f"need at least one canary and one dimension, got m = {m}, dim = {dim}")
    draws = torch.randn((m, dim), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return draws / draws.norm(dim=1, keepdim=True)


def scores(model_change: torch.Tensor, directions: torch.Tensor) -> np.ndarray:
    """Each canary's score: the inner product of the flat model change with its direction."""
    return (directions @ model_change.to(torch.float64).reshape(-1)).numpy()


def guesses(canary_scores: np.ndarray, k_in: int, k_out: int) -> np.ndarray:
    """``+1`` for the ``k_in`` highest scores, ``-1`` for the ``k_out`` lowest, ``0`` (abstain) otherwise."""
    m = len(canary_scores)
    if k_in < 0 or k_out < 0 or k_in + k_out > m:
        raise ValueError(f"k_in ({k_in}) and k_out ({k_out}) must be >= 0 and together at most m ({m})")
    order = np.argsort(canary_scores, kind="stable")
    guess = np.zeros(m, dtype=np.int64)
    guess[order[m - k_in:]] = 1
    guess[order[:k_out]] = -1
    return guess


@dataclass(frozen=True)
class AuditOutcome:
    canaries: int
    guesses: int
    correct: int
    delta: float
    confidence: float
    epsilon_lower: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(membership: np.ndarray, canary_scores: np.ndarray, k_in: int, k_out: int, delta: float,
          confidence: float = 0.95) -> AuditOutcome:
    """Guess from the scores, count the correct guesses and bound epsilon from below."""
    guess = guesses(canary_scores, k_in, k_out)
    truth = np.where(membership, 1, -1)
    r = int(np.count_nonzero(guess))
    v = int(np.count_nonzero(guess * truth == 1))
    m = len(membership)
    return AuditOutcome(m, r, v, delta, confidence, epsilon_lower_bound(m, r, v, delta, confidence))
