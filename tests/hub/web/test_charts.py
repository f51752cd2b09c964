"""The run page's curve geometry (the same numbers run.js draws with)."""

from __future__ import annotations

from consortium.hub.web.charts import HEIGHT, PAD, WIDTH, chart, charts


def test_a_curve_spans_the_run_on_x_and_its_values_on_y() -> None:
    found = chart("test.loss", "test loss", [(1, 2.0), (2, 1.0), (3, 0.5)], total_rounds=5)
    points = [tuple(map(float, p.split(","))) for p in found.points.split()]
    assert points[0] == (PAD, PAD) and points[-1][1] == HEIGHT - PAD
    assert points[-1][0] == PAD + (WIDTH - 2 * PAD) / 2  # round 3 of 5: half way
    assert (found.y_min, found.y_max, found.last) == (0.5, 2.0, 0.5)


def test_a_flat_curve_runs_through_the_middle() -> None:
    found = chart("wall_s", "round time (s)", [(1, 0.3), (2, 0.3)], total_rounds=1)
    assert {p.split(",")[1] for p in found.points.split()} == {f"{HEIGHT / 2:.1f}"}


def test_each_metric_of_each_group_and_the_round_times_get_a_curve() -> None:
    rounds = [{"round": n, "test": {"accuracy": 0.5, "loss": 1.0}, "federated_eval": {"accuracy": 0.4},
               "federated_eval_pending": n == 2, "train": {}, "wall_s": 0.1} for n in (2, 1)]
    found = charts(rounds, total_rounds=2)
    assert [c.key for c in found] == ["test.accuracy", "test.loss", "federated_eval.accuracy", "wall_s"]
    assert len(found[2].points.split()) == 1 and len(found[0].points.split()) == 2
