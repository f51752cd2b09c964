"""Challenge rules (pure): the split is deterministic and partitions the rows, boards rank ties by submission
time, the final board ranks each org's public pick by its private score, prizes sum to the prize, and signed
statements refuse what does not belong in them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consortium.governance import challenges as rules

T0 = datetime(2026, 12, 3, tzinfo=UTC)


@given(st.integers(2, 3000), st.floats(0.01, 0.99), st.integers(0, 2**62))
def test_the_split_is_a_seeded_partition_with_both_parts_non_empty(rows: int, fraction: float, seed: int) -> None:
    public, private = rules.split_indices(rows, fraction, seed)
    again = rules.split_indices(rows, fraction, seed)
    assert np.array_equal(public, again[0]) and np.array_equal(private, again[1])
    assert len(public) >= 1 and len(private) >= 1
    assert sorted(np.concatenate([public, private]).tolist()) == list(range(rows))


def test_the_split_depends_on_the_seed_and_refuses_degenerate_inputs() -> None:
    assert not np.array_equal(rules.split_indices(100, 0.5, 1)[0], rules.split_indices(100, 0.5, 2)[0])
    with pytest.raises(ValueError, match="at least 2 rows"):
        rules.split_indices(1, 0.5, 0)
    with pytest.raises(ValueError, match="strictly between"):
        rules.split_indices(10, 1.0, 0)


entries = st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from([0.1, 0.5, 0.9]),
                             st.sampled_from([0.2, 0.6])), min_size=1, max_size=12)


def scored(rows) -> list[rules.Scored]:
    return [rules.Scored(i + 1, org, T0 + timedelta(minutes=i), pub, priv) for i, (org, pub, priv) in enumerate(rows)]


@given(entries, st.booleans())
def test_boards_rank_one_entry_per_org_and_break_ties_by_submission_time(rows, higher: bool) -> None:
    board = rules.public_board(scored(rows), higher)
    assert len({p.org for p in board}) == len(board) == len({org for org, _, _ in rows})
    assert [p.rank for p in board] == list(range(1, len(board) + 1))
    for first, second in zip(board, board[1:]):
        better = first.score > second.score if higher else first.score < second.score
        assert better or (first.score == second.score and first.submitted_at < second.submitted_at)
    for placing in board:  # each org's entry is its best, the earliest of equal bests
        own = [s for s in scored(rows) if s.org == placing.org]
        best = max(s.public for s in own) if higher else min(s.public for s in own)
        assert placing.score == best
        assert placing.submitted_at == min(s.submitted_at for s in own if s.public == best)


def test_the_final_board_ranks_each_orgs_public_pick_by_its_private_score() -> None:
    rows = scored([("a", 0.9, 0.2), ("a", 0.5, 0.99), ("b", 0.8, 0.6), ("c", 0.7, 0.6)])
    final = rules.final_board(rows, higher_is_better=True)
    assert [(p.org, p.submission_id, p.score) for p in final] == [("b", 3, 0.6), ("c", 4, 0.6), ("a", 1, 0.2)]
    assert rules.final_board(scored([("a", 0.9, None)]), True) == []


@given(st.integers(0, 10**6), st.lists(st.sampled_from(["n", "s", "e", "w"]), max_size=6))
def test_prize_shares_sum_to_the_prize_over_the_team(prize: int, team: list[str]) -> None:
    shares = rules.prize_shares(prize, team)
    assert sum(shares.values()) == (prize if team else 0)
    assert set(shares) <= set(team) and max(shares.values(), default=0) - min(shares.values(), default=0) <= 1


def test_score_statements_refuse_what_does_not_belong() -> None:
    fields = dict(hub_id="0" * 32, challenge_id=1, host="n", submission_id=2, weights_sha256="a" * 64,
                  part="public", part_sha256="b" * 64, metric="accuracy", rows=10)
    with pytest.raises(ValueError, match="part"):
        rules.score_statement(**(fields | {"part": "secret"}), score=0.5)
    with pytest.raises(ValueError, match="finite"):
        rules.score_statement(**fields, score=float("nan"))
    with pytest.raises(ValueError, match="either a score or an error"):
        rules.score_statement(**fields, score=0.5, error="also broken")
    statement = rules.score_statement(**fields, score=0.5)
    assert rules.score_message(statement).startswith(b"consortium-ledger-actor/1\n")
    with pytest.raises(ValueError, match="type"):
        rules.opened_message(statement)
    assert rules.utc_day(datetime(2026, 12, 3, 23, 30, tzinfo=UTC) + timedelta(hours=1)).isoformat() == "2026-12-04"
