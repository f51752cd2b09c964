"""The attack x rule matrix's runs: final test accuracy (and backdoor success) of each rule under attack.

Every run is the digits MLP over n simulated clients (all of them in every round) on the vectorised engine,
of which the first f are malicious (:mod:`consortium.sim.attacks`). One run per (partition, seed, attack,
rule); the seed sets the model init, the local shuffles and the partition. A cell reports the mean ± std of
the final test accuracy over seeds, its drop against the same rule and partition without attack, and the
backdoor success rate: the fraction of triggered test digits whose true label is not the target that the
model reads as the target. :mod:`consortium.bench.attack_suite` summarises and reports the records.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from consortium.fl.core import FLError
from consortium.plan import RunPlan
from consortium.sim.attacks import (
    DIGITS_TRIGGER,
    build_attack,
    make_tamper,
    malicious_ids,
    malicious_positions,
    poison_partition,
)
from consortium.sim.datasets import SimDataset, load_dataset
from consortium.sim.engines.factory import make_engine
from consortium.sim.partition import partition
from consortium.sim.simulation import Simulation
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
    success = simulation.plan.algorithm.evaluate(
        simulation.plan.hp, result.params, trigger.triggered_test(simulation.test)
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
    """FLError naming an unknown rule or attack, or a spec that does not resolve, before anything runs."""
    known = rule_catalogue(config.clients, config.malicious)
    unknown = [r for r in rules if r not in known]
    if unknown:
        raise FLError(f"unknown rule(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for name in attacks:
        build_attack(name, config.clients, config.malicious)
    for rule in rules:
        project, _ = parse_spec(_spec(known[rule], RunSetting("none", rule, PARTITIONS[0], 0), config))
        RunPlan.of(project)


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
