"""`consortium bench valuation`: are the contribution measures valid, and what do they cost per round?

**Validity** (digits classifier, ``n`` orgs for each n in ``--orgs``, ``--rounds`` rounds, one repetition per
seed: the seed shuffles the rows and seeds the run). Every scenario's rounds are valued by exact Shapley (the
reference), GTG-Shapley and leave-one-out (the peer measure GTG is compared with):

- *uneven*: IID shares of growing size; GTG against exact: Spearman rank correlation and the mean absolute
  error as a share of the total value.
- *labels*: the last org's labels are uniform noise; *noise*: the last org sends the params plus Gaussian noise.
  Is the free rider ranked last?
- *copy*: the last org holds a copy of org 0's rows; the pair's sum against org 0's value without the copy, and
  the copy's share of the pair.
- *double*: org 0 holds twice the IID rows of org 1; value of org 0 over value of org 1.

**Cost**: seconds spent valuing one round at n = 10 (GTG and exact) and n = 100 (GTG only), equal IID shares.

Each figure is the median over seeds. Everything runs in this process, one torch thread.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from consortium.fl.core import LocalData
from consortium.protocol import ProjectCreate
from consortium.sim.datasets import load_dataset
from consortium.sim.valuation import ValuedRun, noise_update, valued_run

METHODS = ("exact-shapley", "gtg-shapley", "leave-one-out")
HYPERPARAMETERS = {"layers": [64, 32, 10], "optimizer": "sgd", "lr": 0.1, "local_epochs": 1, "batch_size": 16}
TEST_ROWS = 300


@dataclass(frozen=True)
class ValuationConfig:
    orgs: tuple[int, ...] = (5, 8)
    rounds: int = 5
    seeds: int = 3
    cost_orgs: tuple[int, ...] = (10, 100)
    cost_rounds: int = 2


def _spec(rounds: int, seed: int) -> ProjectCreate:
    return ProjectCreate.model_validate({
        "name": "valuation-bench", "rounds": rounds, "seed": seed, "min_nodes": 1, "datasets": ["bench/digits"],
        "algorithm": {"name": "classifier", "hyperparameters": HYPERPARAMETERS}})


def _digits(seed: int) -> tuple[LocalData, LocalData]:
    data = load_dataset("digits")
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    return LocalData(data.train.x[order], data.train.y[order]), LocalData(data.test.x[:TEST_ROWS],
                                                                           data.test.y[:TEST_ROWS])


def _split(train: LocalData, sizes: Sequence[int]) -> dict[str, LocalData]:
    shares, start = {}, 0
    for i, size in enumerate(sizes):
        shares[f"org{i}"] = LocalData(train.x[start:start + size], train.y[start:start + size])
        start += size
    return shares


def _uneven_sizes(n: int, rows: int) -> list[int]:
    """Sizes growing linearly (1, 2, ..., n parts) over ``rows``."""
    unit = rows // (n * (n + 1) // 2)
    return [unit * (i + 1) for i in range(n)]


def _last(run: ValuedRun, method: str) -> bool:
    return int(np.argmin(run.values(method))) == len(run.orgs) - 1


def scenario_runs(n: int, seed: int, rounds: int) -> dict[str, Any]:
    """One seed's five scenarios at ``n`` orgs, reduced to the figures the report shows."""
    train, test = _digits(seed)
    spec = _spec(rounds, seed)
    rows = len(train)
    uneven = valued_run(spec, _split(train, _uneven_sizes(n, rows)), test, METHODS)
    exact, gtg, loo = (uneven.values(m) for m in METHODS)
    figures: dict[str, Any] = {
        "spearman_gtg": float(spearmanr(exact, gtg).statistic),
        "spearman_loo": float(spearmanr(exact, loo).statistic),
        "mae_share_gtg": float(np.abs(exact - gtg).mean() / abs(exact.sum())),
        "mae_share_loo": float(np.abs(exact - loo).mean() / abs(exact.sum())),
        "evaluations": {m: uneven.evaluations[m] / rounds for m in METHODS},
        "accuracy": uneven.final_metrics["accuracy"],
    }
    equal = [rows // (n + 1)] * n
    shares = _split(train, equal)
    last = f"org{n - 1}"
    noisy_labels = dict(shares)
    noisy_labels[last] = LocalData(shares[last].x, torch.randint(
        0, 10, (len(shares[last]),), generator=torch.Generator().manual_seed(seed)))
    labels = valued_run(spec, noisy_labels, test, METHODS)
    noise = valued_run(spec, shares, test, METHODS, behaviours={last: noise_update(0.1)})
    figures["labels_last"] = {m: _last(labels, m) for m in METHODS}
    figures["noise_last"] = {m: _last(noise, m) for m in METHODS}
    without_copy = dict(list(shares.items())[: n - 1])
    with_copy = {**without_copy, last: shares["org0"]}
    alone = valued_run(spec, without_copy, test, ["exact-shapley"]).values("exact-shapley")[0]
    copied = valued_run(spec, with_copy, test, ["exact-shapley", "gtg-shapley"])
    pair = {m: copied.values(m)[[0, n - 1]] for m in ("exact-shapley", "gtg-shapley")}
    figures["copy_pair_over_alone"] = {m: float(p.sum() / alone) for m, p in pair.items()}
    figures["copy_share"] = {m: float(p[1] / p.sum()) for m, p in pair.items()}
    doubled = _split(train, [2 * equal[0], *equal[1:]])
    double = valued_run(spec, doubled, test, ["exact-shapley", "gtg-shapley"])
    figures["double_ratio"] = {m: float(double.values(m)[0] / double.values(m)[1])
                               for m in ("exact-shapley", "gtg-shapley")}
    return figures


def cost_per_round(n: int, seed: int, rounds: int) -> dict[str, float]:
    """Seconds of valuation per round at ``n`` equal IID orgs (exact only where n <= 10)."""
    train, test = _digits(seed)
    methods = ["gtg-shapley", "exact-shapley"] if n <= 10 else ["gtg-shapley"]
    run = valued_run(_spec(rounds, seed), _split(train, [len(train) // n] * n), test, methods)
    return {m: run.seconds[m] / rounds for m in methods} | {f"{m}_evaluations": run.evaluations[m] / rounds
                                                             for m in methods}


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def run_valuation_bench(config: ValuationConfig, progress: Callable[[str], None]) -> dict[str, Any]:
    torch.set_num_threads(1)
    validity: dict[str, list[dict[str, Any]]] = {}
    for n in config.orgs:
        for seed in range(config.seeds):
            progress(f"validity: n = {n}, seed {seed}")
            validity.setdefault(str(n), []).append(scenario_runs(n, seed, config.rounds))
    cost: dict[str, list[dict[str, float]]] = {}
    for n in config.cost_orgs:
        for seed in range(config.seeds):
            progress(f"cost: n = {n}, seed {seed}")
            cost.setdefault(str(n), []).append(cost_per_round(n, seed, config.cost_rounds))
    return {"config": config.__dict__, "validity": validity, "cost": cost}


def _med(runs: list[dict[str, Any]], *path: str) -> float:
    def pick(run: dict[str, Any]) -> Any:
        for key in path:
            run = run[key]
        return run

    return _median([float(pick(r)) for r in runs])


def _all(runs: list[dict[str, Any]], *path: str) -> str:
    hits = sum(bool(r[path[0]][path[1]]) for r in runs)
    return f"{hits}/{len(runs)}"


def report_markdown(result: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    config = result["config"]
    lines = [
        f"Machine: {machine['cpu']} ({machine['cores']} cores), {machine['python']}, torch {machine['torch']}, "
        f"{machine['torch_threads']} torch thread; {machine['date']}. Command: `{command}`.",
        f"Digits classifier (layers {HYPERPARAMETERS['layers']}), {config['rounds']} rounds, {config['seeds']} "
        "seeds (medians; *last* counts the seeds where the free rider got the lowest value).", "",
        "| n | Spearman GTG / exact | MAE GTG (share of total) | Spearman LOO / exact | MAE LOO | label-noise rider last "
        "(exact, GTG, LOO) | noise rider last (exact, GTG, LOO) | copy pair / original alone (exact, GTG) | copy's "
        "share of pair (exact, GTG) | 2x data / 1x (exact, GTG) | coalitions per round (exact, GTG, LOO) | final acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, runs in result["validity"].items():
        lines.append(
            f"| {n} | {_med(runs, 'spearman_gtg'):.3f} | {_med(runs, 'mae_share_gtg'):.1%} | "
            f"{_med(runs, 'spearman_loo'):.3f} | {_med(runs, 'mae_share_loo'):.1%} | "
            + ", ".join(_all(runs, "labels_last", m) for m in METHODS) + " | "
            + ", ".join(_all(runs, "noise_last", m) for m in METHODS) + " | "
            + ", ".join(f"{_med(runs, 'copy_pair_over_alone', m):.2f}" for m in METHODS[:2]) + " | "
            + ", ".join(f"{_med(runs, 'copy_share', m):.2f}" for m in METHODS[:2]) + " | "
            + ", ".join(f"{_med(runs, 'double_ratio', m):.2f}" for m in METHODS[:2]) + " | "
            + ", ".join(f"{_med(runs, 'evaluations', m):.0f}" for m in METHODS)
            + f" | {_med(runs, 'accuracy'):.3f} |")
    lines += ["", f"Cost of valuing one round (equal IID shares, {config['cost_rounds']} rounds, median over seeds):", "",
              "| n | GTG s/round | GTG coalitions | exact s/round | exact coalitions | exact / GTG time |",
              "|---|---|---|---|---|---|"]
    for n, runs in result["cost"].items():
        gtg = _med(runs, "gtg-shapley")
        row = f"| {n} | {gtg:.3f} | {_med(runs, 'gtg-shapley_evaluations'):.0f} | "
        if "exact-shapley" in runs[0]:
            exact = _med(runs, "exact-shapley")
            row += f"{exact:.3f} | {_med(runs, 'exact-shapley_evaluations'):.0f} | {exact / gtg:.1f}x |"
        else:
            row += "not run (2^n coalitions) | | |"
        lines.append(row)
    return "\n".join(lines)
