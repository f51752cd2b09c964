"""Running a project spec over N simulated clients: cohort sampling, local work, aggregation, evaluation.

The round loop is the same for every engine; an engine (:mod:`consortium.sim.engines`, built by
:func:`~consortium.sim.engines.factory.make_engine`) only decides how the cohort's local work is computed
and reduced. This module knows the engine contract alone, never a particular engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from consortium.fl import preprocessing
from consortium.fl.baseline import majority_baseline
from consortium.fl.cohort import Cohort, by_decreasing_size
from consortium.fl.core import FLError, LocalData, Params, derive_seed
from consortium.fl.environments import LocalEnvironment
from consortium.plan import RunPlan
from consortium.preprocessing_wire import FittedPreprocessing
from consortium.protocol import ProjectCreate
from consortium.sim.datasets import SimDataset, load_dataset
from consortium.sim.engines.base import Engine, Setup, Tamper, client_data
from consortium.sim.environments import (
    SimEnvironments,
    check_algorithm_fits,
    is_environment_source,
    load_environments,
)
from consortium.sim.partition import partition
from consortium.sim.spec import SimulationSettings


@dataclass(frozen=True)
class RoundRecord:
    round: int
    clients: int
    num_examples: int
    train: dict[str, float]
    test: dict[str, float]
    wall_s: float
    diverged: list[str] = field(default_factory=list)
    """Metrics left out of ``train`` and ``test`` because they are NaN or infinite, as the hub names them."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "clients": self.clients,
            "num_examples": self.num_examples,
            "train": self.train,
            "test": self.test,
            "diverged": self.diverged,
            "wall_s": self.wall_s,
        }


@dataclass
class SimResult:
    spec: ProjectCreate
    settings: SimulationSettings
    dataset: SimDataset | SimEnvironments
    params: Params
    rounds: list[RoundRecord] = field(default_factory=list)
    server_state: Params = field(default_factory=dict)
    """The server optimiser's state and SCAFFOLD's control variate after the last round."""
    preprocessing: FittedPreprocessing | None = None
    """The transform fitted from the clients' statistics (spec ``preprocessing``)."""
    baseline: dict[str, Any] | None = None
    """The test set's majority-class baseline (:func:`consortium.fl.baseline.majority_baseline`)."""

    @property
    def final_metrics(self) -> dict[str, float]:
        return dict(self.rounds[-1].test) if self.rounds else {}


def client_ids(num_clients: int) -> list[str]:
    width = len(str(num_clients - 1))
    return [f"client-{i:0{width}d}" for i in range(num_clients)]


def resolve_device(name: str) -> torch.device:
    """``cpu`` or ``cuda[:i]``; FLError when CUDA is asked for and not available."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise FLError(f"--device {name!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FLError("--device cuda: no CUDA device is available to torch on this machine")
    if device.type not in ("cpu", "cuda"):
        raise FLError(f"--device {name!r}: use cpu or cuda")
    return device


def load_source(settings: SimulationSettings, raw: bool = False, categorical: Sequence[str] = ()
                ) -> SimDataset | SimEnvironments:
    """The dataset the settings name (``raw``: features unscaled, for the spec's preprocessing; a file's
    ``categorical`` columns may hold strings), or one environment per client for an ``env:ID`` source."""
    if is_environment_source(settings.dataset):
        return load_environments(
            settings.dataset, settings.clients, settings.physics_spread, settings.partition_seed
        )
    return load_dataset(
        settings.dataset,
        settings.target,
        test_fraction=settings.test_fraction,
        seed=settings.split_seed,
        samples=settings.samples,
        raw=raw,
        categorical=categorical,
    )


def fit_preprocessing(spec: ProjectCreate, dataset: SimDataset, parts: list[np.ndarray]) -> FittedPreprocessing:
    """The spec's transform fitted as a real run fits it: each client's statistics of its training rows,
    combined (:mod:`consortium.fl.preprocessing`)."""
    assert spec.preprocessing is not None
    names = dataset.feature_names or preprocessing.default_names(dataset.num_features)
    layout = preprocessing.layout(spec.preprocessing, names)
    limit = spec.preprocessing.max_categories
    x = dataset.train.x.reshape(len(dataset.train), -1)
    stats = [preprocessing.column_stats(x[torch.from_numpy(part)], layout, limit, dataset.labels) for part in parts]
    return preprocessing.fit(spec.preprocessing, layout, preprocessing.combine(stats))


def prepared(dataset: SimDataset, fitted: FittedPreprocessing) -> SimDataset:
    """``dataset`` with the fitted transform applied to its training and test rows."""
    flat = lambda d: LocalData(d.x.reshape(len(d), -1), d.y)
    return replace(dataset, train=preprocessing.transform_data(fitted, flat(dataset.train)),
                   test=preprocessing.transform_data(fitted, flat(dataset.test)))


def client_parts(dataset: SimDataset | SimEnvironments, settings: SimulationSettings) -> list[np.ndarray]:
    """Each client's row indices: the settings' partition of a dataset, or its one environment."""
    if isinstance(dataset, SimEnvironments):
        return dataset.parts()
    train = dataset.train
    labels = None if train.y is None or train.y.is_floating_point() else train.y.numpy()
    return partition(settings.partition, labels, len(train), settings.clients, settings.partition_seed)


def train_and_test(
    dataset: SimDataset | SimEnvironments, device: torch.device
) -> tuple[LocalData | list[LocalEnvironment], LocalData | LocalEnvironment]:
    """The clients' training data on ``device`` and the data each round is tested on."""
    if isinstance(dataset, SimEnvironments):
        if device.type != "cpu":
            raise FLError("environment clients run on the CPU; use --device cpu")
        return dataset.train, dataset.test
    return _on_device(dataset.train, device), _on_device(dataset.test, device)


def _on_device(data: LocalData, device: torch.device) -> LocalData:
    return LocalData(data.x.to(device), None if data.y is None else data.y.to(device))


class Simulation:
    """One simulated run of ``spec``: data, partition, engine and the round loop."""

    def __init__(
        self,
        spec: ProjectCreate,
        settings: SimulationSettings,
        dataset: SimDataset | SimEnvironments | None = None,
        parts: list[np.ndarray] | None = None,
        initial_params: Params | None = None,
        tamper: Tamper | None = None,
    ) -> None:
        self.spec, self.settings = spec, settings
        self.device = resolve_device(settings.device)
        plan = RunPlan.of(spec, sampling=settings.sampling())
        self.dataset = dataset or load_source(settings, raw=spec.preprocessing is not None,
                                              categorical=spec.preprocessing.categorical if spec.preprocessing else ())
        check_algorithm_fits(plan.algorithm, self.dataset)
        if parts is None:
            parts = client_parts(self.dataset, settings)
        if len(parts) != settings.clients:
            raise FLError(f"the partition has {len(parts)} clients, the settings say {settings.clients}")
        self.preprocessing = None
        if spec.preprocessing is not None and isinstance(self.dataset, SimDataset):
            self.preprocessing = fit_preprocessing(spec, self.dataset, parts)
            self.dataset = prepared(self.dataset, self.preprocessing)
        self.plan = plan.knowing(self.dataset.num_features, settings.clients)
        self.parts = parts
        self.ids = client_ids(settings.clients)
        self.cohort_size = settings.cohort_size()
        self.train, self.test = train_and_test(self.dataset, self.device)
        self.setup = Setup(self.plan, self.train, self.device, tamper, tuple(self.ids))
        self.initial_params = initial_params

    def cohort(self, round_number: int) -> Cohort:
        """The round's clients (sampled when the cohort is smaller than N), largest first, with their seeds."""
        chosen = np.arange(self.settings.clients)
        if self.cohort_size < self.settings.clients:
            rng = np.random.default_rng(derive_seed(self.spec.seed, "cohort", round_number))
            chosen = np.sort(rng.choice(self.settings.clients, self.cohort_size, replace=False))
        chosen = chosen[by_decreasing_size(np.array([len(self.parts[i]) for i in chosen]))]
        ids = [self.ids[i] for i in chosen]
        seeds = [derive_seed(self.spec.seed, "fit", round_number, cid) for cid in ids]
        return Cohort.from_parts(ids, [self.parts[i] for i in chosen], seeds)

    def init_params(self) -> Params:
        """The global params before round 1: the algorithm's init, or built from every client's init update."""
        if self.initial_params is not None:
            return {k: v.to(self.device) for k, v in self.initial_params.items()}
        plan = self.plan
        if not plan.algorithm.needs_client_init:
            return {k: v.to(self.device) for k, v in plan.init_params().items()}
        everyone = Cohort.from_parts(
            self.ids, self.parts, [derive_seed(self.spec.seed, "init", 0, c) for c in self.ids]
        )
        updates = [
            replace(
                plan.algorithm.client_init(plan.hp, client_data(self.train, everyone, c), everyone.seeds[c]),
                client_id=everyone.client_ids[c],
            )
            for c in range(len(everyone))
        ]
        return plan.init_params(updates)

    def run(self, engine: Engine, on_round: Callable[[RoundRecord], None] | None = None) -> SimResult:
        """All rounds of the spec on ``engine``; ``on_round`` sees each round's record as it closes."""
        plan = self.plan
        params = self.init_params()
        plan.strategy.check_cohort(self.cohort_size)
        server_state = plan.init_server_state(params)
        result = SimResult(self.spec, self.settings, self.dataset, params, preprocessing=self.preprocessing,
                           baseline=majority_baseline(getattr(self.test, "y", None)))
        for number in range(1, self.spec.rounds + 1):
            started = time.perf_counter()
            cohort = self.cohort(number)
            current = plan.for_round(server_state)
            clip = current.privacy.clip if current.adaptive_clip and current.privacy else None
            aggregate = current.noised(params, engine.fit(params, cohort, plan.control(server_state), clip=clip),
                                       len(cohort), number)
            params, server_state = current.close_round(params, aggregate, server_state)
            scores = plan.scores(params, aggregate.train_metrics, self.test)
            record = RoundRecord(
                number,
                len(cohort),
                aggregate.num_examples,
                scores.train,
                scores.test,
                time.perf_counter() - started,
                scores.diverged,
            )
            result.rounds.append(record)
            if on_round is not None:
                on_round(record)
        result.params, result.server_state = params, server_state
        return result
