"""Challenges (pure): what a host signs when it opens one and when it scores a submission, the public/private
split of its hidden test set, and the leaderboards.

A host's statements are ledger entries it vouches for: the signed message is the ledger's actor message of
the entry whose payload is exactly the statement (:func:`consortium.ledger.signatures.actor_message`), so one
signature posts the statement and lets any auditor check, from the ledger alone, that the host made it.

Boards. The *public* board ranks each org by its best public score (ties: the earlier submission first); it
is live while the challenge runs. The *final* board, after the deadline, ranks each org's *selected*
submission (its best on the public board, as Kaggle selects by default) by its private score, so many
submissions tuned to the public part buy nothing on the final board. Ties again go to the earlier submission.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np

from consortium.crypto import canonical_json
from consortium.ledger.signatures import actor_message

OPENED_EVENT = "challenge.opened"
SCORED_EVENT = "challenge.scored"
OPENED_TYPE = "consortium-challenge/1"
SCORE_TYPE = "consortium-challenge-score/1"
PARTS = ("public", "private")


def split_indices(rows: int, public_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The row indices of the public and private parts: a seeded permutation cut at ``public_fraction``
    (each part keeps at least one row; both sorted). The same rows, fraction and seed give the same parts."""
    if rows < 2:
        raise ValueError(f"a challenge test set needs at least 2 rows, got {rows}")
    if not 0.0 < public_fraction < 1.0:
        raise ValueError(f"public_fraction must lie strictly between 0 and 1, got {public_fraction}")
    order = np.random.default_rng(seed).permutation(rows)
    cut = min(max(1, round(rows * public_fraction)), rows - 1)
    return np.sort(order[:cut]), np.sort(order[cut:])


def opened_message(statement: Mapping[str, object]) -> bytes:
    """The bytes the host's key signs to open a challenge (``statement``: the ``challenge.opened``
    payload)."""
    if statement.get("type") != OPENED_TYPE:
        raise ValueError(f"a challenge statement has type {OPENED_TYPE!r}")
    return actor_message(OPENED_EVENT, dict(statement))


def score_statement(*, hub_id: str, challenge_id: int, host: str, submission_id: int, weights_sha256: str,
                    part: str, part_sha256: str, metric: str, score: float | None, rows: int,
                    error: str = "") -> dict[str, object]:
    """The host's statement of one submission's score on one part of its test set (``score`` None with
    ``error`` when the model could not be scored: the reason is signed too)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, not {part!r}")
    if score is not None and not math.isfinite(score):
        raise ValueError("a score must be finite; report a non-finite one as an error")
    if (score is None) == (not error):
        raise ValueError("a score statement carries either a score or an error")
    return {"type": SCORE_TYPE, "hub_id": hub_id, "challenge_id": challenge_id, "host": host,
            "submission_id": submission_id, "weights_sha256": weights_sha256, "part": part,
            "part_sha256": part_sha256, "metric": metric, "score": score, "rows": rows, "error": error[:500]}


def score_message(statement: Mapping[str, object]) -> bytes:
    """The bytes the host's key signs for a score (the ``challenge.scored`` entry's actor message)."""
    if statement.get("type") != SCORE_TYPE:
        raise ValueError(f"a score statement has type {SCORE_TYPE!r}")
    canonical_json(dict(statement))
    return actor_message(SCORED_EVENT, dict(statement))


def utc_day(moment: datetime) -> date:
    """The UTC day a submission counts against (the daily limit resets at 00:00 UTC)."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no UTC day")
    return moment.astimezone(UTC).date()


@dataclass(frozen=True)
class Scored:
    """One submission as the boards see it."""

    submission_id: int
    org: str
    submitted_at: datetime
    public: float | None
    private: float | None = None


@dataclass(frozen=True)
class Placing:
    rank: int
    org: str
    submission_id: int
    score: float
    submitted_at: datetime


def _key(higher_is_better: bool, score: float, entry: Scored) -> tuple[float, datetime, int]:
    return (-score if higher_is_better else score, entry.submitted_at, entry.submission_id)


def _best_per_org(entries: Iterable[Scored], higher_is_better: bool) -> dict[str, Scored]:
    best: dict[str, Scored] = {}
    for entry in entries:
        if entry.public is None:
            continue
        held = best.get(entry.org)
        if held is None or (_key(higher_is_better, entry.public, entry)
                            < _key(higher_is_better, held.public, held)):
            best[entry.org] = entry
    return best


def _ranked(pairs: Sequence[tuple[float, Scored]], higher_is_better: bool) -> list[Placing]:
    ordered = sorted(pairs, key=lambda p: _key(higher_is_better, p[0], p[1]))
    return [Placing(i + 1, e.org, e.submission_id, score, e.submitted_at)
            for i, (score, e) in enumerate(ordered)]


def public_board(entries: Iterable[Scored], higher_is_better: bool) -> list[Placing]:
    """Each org's best public score, best first; equal scores rank the earlier submission first."""
    best = _best_per_org(entries, higher_is_better)
    return _ranked([(e.public, e) for e in best.values() if e.public is not None], higher_is_better)


def final_board(entries: Iterable[Scored], higher_is_better: bool) -> list[Placing]:
    """Each org's selected submission (its public-board entry) ranked by its private score; an org whose
    selected submission has no private score is left out."""
    best = _best_per_org(list(entries), higher_is_better)
    return _ranked([(e.private, e) for e in best.values() if e.private is not None], higher_is_better)


def prize_shares(prize: int, team: Sequence[str]) -> dict[str, int]:
    """The winner's prize split over its team (one org: all of it), in equal whole credits summing to
    ``prize``; the remainder goes one credit each to the first orgs by name."""
    members = sorted(set(team))
    if prize <= 0 or not members:
        return {}
    share, left = divmod(prize, len(members))
    return {org: share + (1 if i < left else 0) for i, org in enumerate(members) if share or i < left}
