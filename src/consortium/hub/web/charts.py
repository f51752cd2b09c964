"""The run page's curves as SVG, computed on the server (the page works without scripts); ``static/run.js``
draws the very same geometry in the browser as rounds arrive. Pure functions of the rounds' metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WIDTH, HEIGHT, PAD = 320, 160, 24
"""The SVG's view box and the margin kept for the axes' labels (run.js uses the same numbers)."""
GROUPS = (("test", "test"), ("federated_eval", "federated"), ("train", "train"))
"""The metric groups of a round, in the order their charts appear, with the word each title starts with."""


@dataclass(frozen=True)
class Chart:
    """One curve: its key (``group.metric``), title, the polyline's points, the y range and the last value."""

    key: str
    title: str
    points: str
    y_min: float
    y_max: float
    last: float


def series(rounds: list[dict[str, Any]]) -> dict[str, tuple[str, list[tuple[int, float]]]]:
    """Each curve's title and its (round, value) points: every metric of every group, then the round times."""
    found: dict[str, tuple[str, list[tuple[int, float]]]] = {}
    ordered = sorted(rounds, key=lambda r: r["round"])
    for group, word in GROUPS:
        for rnd in ordered:
            if group == "federated_eval" and rnd.get("federated_eval_pending"):
                continue  # arrives with the next round
            for name, value in sorted(rnd.get(group, {}).items()):
                found.setdefault(f"{group}.{name}", (f"{word} {name}", []))[1].append((rnd["round"], value))
    for rnd in ordered:
        found.setdefault("wall_s", ("round time (s)", []))[1].append((rnd["round"], rnd["wall_s"]))
    return found


def _scale(value: float, low: float, high: float, size: float) -> float:
    return size / 2 if high == low else (value - low) / (high - low) * size


def chart(key: str, title: str, points: list[tuple[int, float]], total_rounds: int) -> Chart:
    """The polyline of ``points`` on an x axis from round 1 to ``total_rounds`` and a y axis spanning them."""
    values = [v for _, v in points]
    low, high = min(values), max(values)
    span_x = max(total_rounds - 1, 1)
    coords = []
    for number, value in points:
        x = PAD + (number - 1) / span_x * (WIDTH - 2 * PAD)
        y = HEIGHT - PAD - _scale(value, low, high, HEIGHT - 2 * PAD)
        coords.append(f"{x:.1f},{y:.1f}")
    return Chart(key, title, " ".join(coords), low, high, values[-1])


def charts(rounds: list[dict[str, Any]], total_rounds: int) -> list[Chart]:
    """Every curve of the closed ``rounds`` (RoundMetrics as JSON) of a run of ``total_rounds`` rounds."""
    return [chart(key, title, points, total_rounds) for key, (title, points) in series(rounds).items()]
