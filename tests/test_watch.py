"""``consortium run watch``'s progress line: metrics that diverged on the hub are named, never shown as NaN."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console

from consortium.protocol import RoundMetrics, RunOut, RunProgress
from consortium.watch import follow_run


class OneRound:
    """A hub whose run finished after one round whose test loss diverged."""

    def progress(self, run_id: int, after_round: int = 0, wait: float = 0.0) -> RunProgress:
        run = RunOut(id=run_id, project_id=1, status="completed", current_round=1, rounds=1, error=None,
                     model_id=1, created_at=datetime.now(UTC), finished_at=None)
        rnd = RoundMetrics(round=1, participants=["a/d"], dropped=[], train={}, federated_eval={},
                           test={"accuracy": 0.5}, params_sha256="0" * 64, opened_at=0.0, wall_s=0.1,
                           max_fit_compute_s=0.0, max_eval_compute_s=0.0, diverged=["test.loss"])
        return RunProgress.model_validate_json(RunProgress(run=run, rounds=[rnd]).model_dump_json())


def test_a_diverged_metric_is_named_in_the_progress_line() -> None:
    out = io.StringIO()
    final = follow_run(OneRound(), 7, 1, Console(file=out, width=200))
    assert final["status"] == "completed"
    line = out.getvalue()
    assert "accuracy 0.5000  diverged: test.loss" in line and "nan" not in line.lower()


class BelowBaseline:
    """A hub whose run finished no better than always predicting the majority class."""

    def progress(self, run_id: int, after_round: int = 0, wait: float = 0.0) -> RunProgress:
        run = RunOut(id=run_id, project_id=1, status="completed", current_round=1, rounds=1, error=None,
                     model_id=1, created_at=datetime.now(UTC), finished_at=None)
        rnd = RoundMetrics(round=1, participants=["a/d"], dropped=[], train={}, federated_eval={},
                           test={"accuracy": 0.63}, params_sha256="0" * 64, opened_at=0.0, wall_s=0.1,
                           max_fit_compute_s=0.0, max_eval_compute_s=0.0,
                           baseline={"label": 1, "accuracy": 0.63, "examples": 100})
        return RunProgress(run=run, rounds=[rnd], warnings=["test accuracy 0.6300 does not beat the majority-class "
                                                            "baseline 0.6300"])


def test_the_baseline_is_shown_and_a_run_below_it_ends_with_a_warning() -> None:
    out = io.StringIO()
    final = follow_run(BelowBaseline(), 7, 1, Console(file=out, width=200))
    assert "does not beat the majority-class baseline" in final["warnings"][0]
    text = out.getvalue()
    assert "(majority class 0.6300)" in text and "warning:" in text


class RefusedThenFailed:
    """A hub whose run is refused by one node in round 1 (still running), then fails."""

    def __init__(self) -> None:
        self.calls = 0

    def progress(self, run_id: int, after_round: int = 0, wait: float = 0.0) -> RunProgress:
        self.calls += 1
        status = "running" if self.calls == 1 else "failed"
        run = RunOut(id=run_id, project_id=1, status=status, current_round=0, rounds=2, error=None,
                     model_id=None, created_at=datetime.now(UTC), finished_at=None)
        return RunProgress(run=run, rounds=[], refusals=["round 1: a/d refused: local error: file changed"])


def test_each_refusal_is_printed_once() -> None:
    out = io.StringIO()
    final = follow_run(RefusedThenFailed(), 7, 2, Console(file=out, width=200))
    assert final["status"] == "failed"
    assert out.getvalue().count("round 1: a/d refused: local error: file changed") == 1
