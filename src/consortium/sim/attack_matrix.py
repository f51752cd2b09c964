"""The attack x rule matrix: final test accuracy (and backdoor success) of each aggregation rule under attack.

Every run is the digits MLP over n simulated clients (all of them in every round) on the vectorised engine,
of which the first f are malicious (:mod:`consortium.sim.attacks`). One run per (partition, seed, attack,
rule); the seed sets the model init, the local shuffles and the partition. A cell reports the mean ± std of
the final test accuracy over seeds, its drop against the same rule and partition without attack, and the
backdoor success rate: the fraction of triggered test digits whose true label is not the target that the
model reads as the target.
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from consortium.bench.report import machine_info, update_benchmarks_md
from consortium.fl.core import FLError, parse_hyperparams
from consortium.fl.registry import get_algorithm
from consortium.sim.attacks import (
    DIGITS_TRIGGER,
    build_attack,
    make_tamper,
    malicious_ids,
    malicious_positions,
    poison_partition,
)
from consortium.sim.datasets import SimDataset, load_dataset
from consortium.sim.engine import Simulation, make_engine
from consortium.sim.partition import partition
from consortium.sim.spec import parse_spec

MLP_HYPERPARAMETERS: dict[str, Any] = {
    "layers": [64, 64, 10],
    "activation": "relu",
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "local_epochs": 2,
    "batch_size": 32,
}
"""The clients' local training in every run of the matrix."""

DEFAULT_ROUNDS = 40
PARTITIONS = ("iid", "dirichlet:0.5")
DEFAULT_RULE = "multikrum_momentum"
"""The robust rule the product recommends, chosen on this matrix (see BENCHMARKS.md, section attack)."""

SERVER_MOMENTUM: dict[str, Any] = {"name": "sgd", "options": {"lr": 1.0, "momentum": 0.5}}
"""Heavy-ball server momentum (FedAvgM-style) paired with the default rule."""


def rule_catalogue(num_clients: int, num_malicious: int) -> dict[str, dict[str, Any]]:
    """Every rule of the matrix as a project's ``strategy`` object, tuned to tolerate ``num_malicious``."""
    f = num_malicious
    return {
        "fedavg": {"name": "fedavg"},
        "krum": {"name": "krum", "options": {"f": f}},
        "multikrum": {"name": "multikrum", "options": {"f": f}},
        "median": {"name": "median"},
        "trimmed_mean": {"name": "trimmed_mean", "options": {"beta": f / num_clients, "f": f}},
        "bulyan": {"name": "bulyan", "options": {"f": f}},
        "centered_clipping": {"name": "centered_clipping", "options": {"tau": 0.2, "iterations": 3}},
        "multikrum_momentum": {"name": "multikrum", "options": {"f": f}, "server_optimizer": SERVER_MOMENTUM},
    }


@dataclass(frozen=True)
class RunSetting:
    """One run of the matrix."""

    attack: str
    rule: str
    partition: str
    seed: int


@dataclass(frozen=True)
class RunRecord:
    attack: str
    rule: str
    partition: str
    seed: int
    accuracy: float
    backdoor_success: float
    """Triggered non-target test digits classified as the target (measured for every run: the clean rate)."""
    wall_s: float


@dataclass(frozen=True)
class MatrixConfig:
    clients: int = 20
    malicious: int = 4
    rounds: int = DEFAULT_ROUNDS


@functools.cache
def _digits() -> SimDataset:
    return load_dataset("digits")


def _spec(strategy: dict[str, Any], setting: RunSetting, config: MatrixConfig) -> dict[str, Any]:
    return {
        "name": "attack-matrix",
        "algorithm": {"name": "classifier", "hyperparameters": MLP_HYPERPARAMETERS},
        "strategy": strategy,
        "rounds": config.rounds,
        "seed": setting.seed,
        "simulation": {
            "dataset": "digits",
            "clients": config.clients,
            "partition": setting.partition,
            "partition_seed": setting.seed,
            "engine": "vectorized",
        },
    }


def run_one(setting: RunSetting, config: MatrixConfig) -> RunRecord:
    """Train under ``setting`` and measure the final model's test accuracy and backdoor success rate."""
    started = time.perf_counter()
    strategies = rule_catalogue(config.clients, config.malicious)
    if setting.rule not in strategies:
        raise FLError(f"unknown rule {setting.rule!r}; known: {', '.join(strategies)}")
    project, settings = parse_spec(_spec(strategies[setting.rule], setting, config))
    dataset = _digits()
    parts = partition(
        setting.partition, dataset.train.y.numpy(), len(dataset.train), config.clients, setting.seed
    )
    attack = build_attack(setting.attack, config.clients, config.malicious)
    if attack.poison_data is not None:
        positions = malicious_positions(config.clients, config.malicious)
        dataset, parts = poison_partition(dataset, parts, positions, attack.poison_data, setting.seed)
    tamper = make_tamper(attack, malicious_ids(config.clients, config.malicious), setting.seed)
    simulation = Simulation(project, settings, dataset=dataset, parts=parts, tamper=tamper)
    engine = make_engine(settings.engine, simulation.setup, settings)
    try:
        result = simulation.run(engine)
    finally:
        engine.close()
    trigger = attack.backdoor or DIGITS_TRIGGER
    success = simulation.algorithm.evaluate(
        simulation.hp, result.params, trigger.triggered_test(simulation.test)
    )
    return RunRecord(
        setting.attack,
        setting.rule,
        setting.partition,
        setting.seed,
        result.final_metrics["accuracy"],
        success.metrics["accuracy"],
        time.perf_counter() - started,
    )


def settings_of(
    rules: Sequence[str], attacks: Sequence[str], partitions: Sequence[str], seeds: Sequence[int]
) -> list[RunSetting]:
    """Every run of the matrix; the no-attack baseline is always included (drops are measured against it)."""
    chosen = ["none", *(a for a in attacks if a != "none")]
    return [
        RunSetting(attack, rule, part, seed)
        for part in partitions
        for seed in seeds
        for attack in chosen
        for rule in rules
    ]


def check_names(rules: Sequence[str], attacks: Sequence[str], config: MatrixConfig) -> None:
    """FLError naming an unknown rule or attack before anything runs."""
    known = rule_catalogue(config.clients, config.malicious)
    unknown = [r for r in rules if r not in known]
    if unknown:
        raise FLError(f"unknown rule(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for name in attacks:
        build_attack(name, config.clients, config.malicious)
    parse_hyperparams(get_algorithm("classifier"), MLP_HYPERPARAMETERS)


def run_attack_matrix(
    rules: Sequence[str],
    attacks: Sequence[str],
    partitions: Sequence[str] = PARTITIONS,
    seeds: Sequence[int] = (0, 1, 2),
    clients: int = 20,
    malicious: int = 4,
    rounds: int = DEFAULT_ROUNDS,
    on_run: Callable[[RunRecord], None] | None = None,
) -> list[RunRecord]:
    """One record per (partition, seed, attack, rule), the no-attack baseline included."""
    config = MatrixConfig(clients, malicious, rounds)
    check_names(rules, attacks, config)
    records = []
    for setting in settings_of(rules, attacks, partitions, seeds):
        record = run_one(setting, config)
        records.append(record)
        if on_run is not None:
            on_run(record)
    return records


# ---------------------------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class Cell:
    """One (attack, rule, partition) over seeds; accuracies and rates as fractions."""

    attack: str
    rule: str
    partition: str
    seeds: int
    accuracy_mean: float
    accuracy_std: float
    drop: float
    """Mean accuracy without attack minus mean accuracy under this attack (same rule and partition)."""
    backdoor_success: float


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _grouped(records: Sequence[RunRecord]) -> dict[tuple[str, str, str], list[RunRecord]]:
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for record in records:
        groups.setdefault((record.attack, record.rule, record.partition), []).append(record)
    return groups


def summarise(records: Sequence[RunRecord]) -> list[Cell]:
    """One cell per (attack, rule, partition), in the order the records came."""
    groups = _grouped(records)
    clean = {
        (rule, part): statistics.fmean(r.accuracy for r in runs)
        for (attack, rule, part), runs in groups.items()
        if attack == "none"
    }
    cells = []
    for (attack, rule, part), runs in groups.items():
        mean, std = _mean_std([r.accuracy for r in runs])
        backdoor = statistics.fmean(r.backdoor_success for r in runs)
        cells.append(Cell(attack, rule, part, len(runs), mean, std, clean[(rule, part)] - mean, backdoor))
    return cells


@dataclass(frozen=True)
class Check:
    description: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.description}: {self.detail}"


def _points(fraction: float) -> str:
    return f"{100 * fraction:.1f}"


def _limit_for(partition: str) -> float:
    return 0.03 if partition == "iid" else 0.06


def validity_checks(cells: Sequence[Cell], default_rule: str = DEFAULT_RULE) -> list[Check]:
    """The harness's validity checks (FedAvg is hurt) and the default rule's robustness, per partition."""
    by_key = {(c.attack, c.rule, c.partition): c for c in cells}
    partitions = sorted({c.partition for c in cells}, key=lambda p: (p != "iid", p))
    checks = []
    for part in partitions:
        flip = by_key.get(("sign_flip", "fedavg", part))
        if flip is not None:
            checks.append(
                Check(
                    f"FedAvg loses >= 20 points under sign flip ({part})",
                    flip.drop >= 0.20,
                    f"drop {_points(flip.drop)} points",
                )
            )
        planted = by_key.get(("backdoor", "fedavg", part))
        if planted is not None:
            checks.append(
                Check(
                    f"backdoor succeeds >= 90 % against FedAvg ({part})",
                    planted.backdoor_success >= 0.90,
                    f"success {_points(planted.backdoor_success)} %",
                )
            )
        checks.extend(_default_rule_checks(cells, default_rule, part))
    return checks


def _default_rule_checks(cells: Sequence[Cell], rule: str, part: str) -> Iterator[Check]:
    attacked = [c for c in cells if c.rule == rule and c.partition == part and c.attack != "none"]
    if not attacked:
        return
    limit = _limit_for(part)
    worst = max(attacked, key=lambda c: c.drop)
    yield Check(
        f"{rule} loses <= {_points(limit)} points in every {part} cell",
        worst.drop <= limit,
        f"worst {worst.attack}: drop {_points(worst.drop)} points",
    )
    planted = next((c for c in attacked if c.attack == "backdoor"), None)
    if planted is not None:
        yield Check(
            f"{rule} keeps backdoor success <= 10 % ({part})",
            planted.backdoor_success <= 0.10,
            f"success {_points(planted.backdoor_success)} %",
        )


def records_as_json(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    return [asdict(r) for r in records]


def cells_as_json(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    return [asdict(c) for c in cells]


# ---------------------------------------------------------------------------------------------- report


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}"


def cell_text(c: Cell) -> str:
    """``accuracy ± std``, the drop when attacked, and the backdoor success on the backdoor row (in %)."""
    text = f"{_percent(c.accuracy_mean)} ± {_percent(c.accuracy_std)}"
    if c.attack != "none":
        text += f" ({-100 * c.drop:+.1f})"
    if c.attack == "backdoor":
        text += f", bd {_percent(c.backdoor_success)}"
    return text


def _table_rows(cells: Sequence[Cell], partition: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The rules (columns) and, per attack, the cell texts of one partition."""
    mine = [c for c in cells if c.partition == partition]
    rules = list(dict.fromkeys(c.rule for c in mine))
    attacks = list(dict.fromkeys(c.attack for c in mine))
    by_key = {(c.attack, c.rule): c for c in mine}
    return rules, [
        (attack, [cell_text(by_key[(attack, rule)]) if (attack, rule) in by_key else "" for rule in rules])
        for attack in attacks
    ]


def partitions_of(cells: Sequence[Cell]) -> list[str]:
    return list(dict.fromkeys(c.partition for c in cells))


def print_matrix(cells: Sequence[Cell], checks: Sequence[Check], console: Console) -> None:
    for part in partitions_of(cells):
        rules, rows = _table_rows(cells, part)
        table = Table(
            "attack", *rules, title=f"final test accuracy % ({part}); (drop), bd = backdoor success %"
        )
        for attack, texts in rows:
            table.add_row(attack, *texts)
        console.print(table)
    for check in checks:
        console.print(f"[{'green' if check.passed else 'red'}]{check.line()}[/]")


def setting_text(config: MatrixConfig) -> str:
    """The matrix's setting in one paragraph: model, local training, clients, rounds, rules."""
    hp = MLP_HYPERPARAMETERS
    catalogue = rule_catalogue(config.clients, config.malicious)
    rules = "; ".join(f"`{name}` {json.dumps(spec)}" for name, spec in catalogue.items())
    return (
        f"Setting: digits MLP {hp['layers']} (local SGD lr {hp['lr']}, momentum {hp['momentum']}, "
        f"{hp['local_epochs']} local epochs, batch {hp['batch_size']}), n = {config.clients} clients all in "
        f"every round, {config.rounds} rounds, vectorised engine. The malicious clients are the first "
        f"f = {config.malicious} client ids. A seed sets the model init, the local shuffles and the "
        f"partition. Rules: {rules}."
    )


def matrix_markdown(
    cells: Sequence[Cell],
    checks: Sequence[Check],
    command: str,
    config: MatrixConfig,
    wall_s: float,
    runs: int,
) -> str:
    """The ``attack`` section of BENCHMARKS.md: setting, one table per partition, the checks."""
    m = machine_info()
    lines = [
        f"Command: `{command}` ({runs} runs, {wall_s / 60:.1f} min wall time)",
        f"Machine: {m['cpu']} ({m['cores']} cores, shared), {m['python']}, torch {m['torch']}, "
        f"{m['torch_threads']} torch thread; measured {m['date']}.",
        "",
        setting_text(config),
        "",
        "Attacks: "
        + "; ".join(
            f"`{name}`: {build_attack(name, config.clients, config.malicious).description}"
            for name in dict.fromkeys(c.attack for c in cells)
        )
        + ".",
        "",
        "Each cell: mean ± std of the final test accuracy (%) over seeds, (the drop in points against the "
        "same rule and partition without attack), and on the backdoor row the backdoor success rate (% of "
        "triggered test digits whose true label is not the target that the model reads as the target).",
    ]
    for part in partitions_of(cells):
        rules, rows = _table_rows(cells, part)
        lines += [
            "",
            f"**{part}**",
            "",
            "| attack | " + " | ".join(rules) + " |",
            "|---" * (len(rules) + 1) + "|",
        ]
        lines += [f"| {attack} | " + " | ".join(texts) + " |" for attack, texts in rows]
    lines += ["", f"Default robust rule: `{DEFAULT_RULE}`. Checks:", ""]
    lines += [f"- {check.line()}" for check in checks]
    return "\n".join(lines)


def write_json(
    path: Path,
    records: Sequence[RunRecord],
    cells: Sequence[Cell],
    checks: Sequence[Check],
    config: MatrixConfig,
) -> None:
    data = {
        "suite": "attack",
        "config": asdict(config),
        "hyperparameters": MLP_HYPERPARAMETERS,
        "rules": rule_catalogue(config.clients, config.malicious),
        "default_rule": DEFAULT_RULE,
        "machine": machine_info(),
        "records": records_as_json(records),
        "cells": cells_as_json(cells),
        "checks": [asdict(check) for check in checks],
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def run_attack_suite(
    rules: Sequence[str],
    attacks: Sequence[str],
    partitions: Sequence[str],
    seeds: Sequence[int],
    config: MatrixConfig,
    command: str,
    json_path: Path | None = None,
    markdown_path: Path | None = None,
    console: Console | None = None,
) -> list[Check]:
    """What `consortium sim attack` does: the runs with a progress bar, the tables, the checks, the files."""
    console = console or Console()
    check_names(rules, attacks, config)
    total = len(settings_of(rules, attacks, partitions, seeds))
    started = time.perf_counter()
    with Progress(
        TextColumn("run"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("", total=total)

        def on_run(r: RunRecord) -> None:
            progress.update(
                task,
                advance=1,
                description=f"{r.partition} seed {r.seed} {r.attack} / {r.rule}: accuracy {r.accuracy:.3f}",
            )

        records = run_attack_matrix(
            rules, attacks, partitions, seeds, config.clients, config.malicious, config.rounds, on_run
        )
    wall_s = time.perf_counter() - started
    cells = summarise(records)
    checks = validity_checks(cells)
    print_matrix(cells, checks, console)
    console.print(f"{len(records)} runs in {wall_s / 60:.1f} min")
    if json_path is not None:
        write_json(json_path, records, cells, checks, config)
        console.print(f"records: {json_path}")
    if markdown_path is not None:
        body = matrix_markdown(cells, checks, command, config, wall_s, len(records))
        update_benchmarks_md(Path(markdown_path), "attack", body, command="consortium sim attack")
        console.print(f"section attack of {markdown_path} updated")
    return checks
