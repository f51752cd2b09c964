"""The run plan: a spec resolves once (or is refused naming its field), and a simulated run and a hub-driven
run of the same spec, seed and clients end with the same params, because both close rounds through it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sqlalchemy.orm import Session, sessionmaker

from consortium.fl import preprocessing, scaffold
from consortium.fl.core import FLError, LocalData, Params, derive_seed
from consortium.fl.strategies import FedAvg
from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import Run
from consortium.hub.db.session import make_engine, migrate, session_factory
from consortium.hub.services import hub_identity
from consortium.hub.services.hub_key import HubKey
from consortium.hub.events import Broker
from consortium.hub.state import HubState
from consortium.hub.services.identity import Principal
from consortium.hub.tensor_cache import TensorCache
from consortium.plan import RoundAggregate, RunPlan
from consortium.codec import encode_update
from consortium.protocol import ProjectCreate, TaskKind, TaskOut, TaskResult, UpdateMeta
from consortium.sim.datasets import SimDataset, load_dataset
from consortium.sim.engines.loop import LoopEngine
from consortium.sim.simulation import Simulation, client_ids
from consortium.sim.spec import SimulationSettings

ORGS = ("north", "south", "east")
ROWS = 60
HYPERPARAMETERS = {"layers": [64, 16, 10], "optimizer": "sgd", "lr": 0.05, "local_epochs": 1,
                   "batch_size": 16}
SCAFFOLD = {"name": "classifier", "hyperparameters": HYPERPARAMETERS | {"scaffold": True}}


def spec(**overrides: Any) -> ProjectCreate:
    fields: dict[str, Any] = {
        "name": "same-math",
        "algorithm": {"name": "classifier", "hyperparameters": HYPERPARAMETERS},
        "datasets": [f"{org}/digits" for org in ORGS],
        "rounds": 2,
        "min_nodes": 3,
        "round_timeout": 60.0,
        "seed": 7,
    }
    return ProjectCreate.model_validate(fields | overrides)


# ---------------------------------------------------------------------------------------------- resolving


def test_defaults_resolve_to_the_algorithms_strategy_and_plain_replacement() -> None:
    plan = RunPlan.of(spec())
    assert plan.strategy_name == "fedavg" and isinstance(plan.strategy, FedAvg)
    assert plan.optimizer is None and not plan.stateful and not plan.uses_scaffold
    assert plan.hp.layers == [64, 16, 10]
    with pytest.raises(FLError, match="needs the number of features"):
        plan.init_params()
    params = plan.knowing(64, 3).init_params()
    aggregate = RoundAggregate({k: v + 1 for k, v in params.items()}, {}, 10)
    new_params, state = plan.close_round(params, aggregate, plan.init_server_state(params))
    assert state == {} and all(torch.equal(new_params[k], params[k] + 1) for k in params)


def test_strategy_options_and_server_optimizer_resolve() -> None:
    plan = RunPlan.of(spec(strategy={"name": "krum", "options": {"f": 1},
                                     "server_optimizer": {"name": "adam", "options": {"lr": 0.5}}}))
    assert plan.strategy_name == "krum" and plan.strategy.options.f == 1
    assert plan.optimizer is not None and plan.optimizer.options.lr == 0.5 and plan.stateful
    params = plan.knowing(64, 3).init_params()
    assert set(plan.init_server_state(params)) == {f"{slot}/{name}" for name in params for slot in ("m", "v")}


def test_scaffold_takes_n_from_the_clients_and_needs_it_to_close() -> None:
    plan = RunPlan.of(spec(algorithm=SCAFFOLD))
    assert plan.uses_scaffold and plan.stateful
    with pytest.raises(FLError, match="needs the number of clients N"):
        plan.server  # noqa: B018 - the property is what refuses
    known = plan.knowing(64, 3)
    assert known.server.scaffold_clients == 3
    params = known.init_params()
    control = known.control(known.init_server_state(params))
    assert control is not None and set(control) == set(params)
    assert all(not t.any() for t in control.values())


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"algorithm": {"name": "perceptron"}}, "algorithm.name", "unknown algorithm 'perceptron'"),
        ({"algorithm": {"name": "classifier", "hyperparameters": {"layers": [64, 10], "lr": -1}}},
         "algorithm.hyperparameters", "lr"),
        ({"algorithm": {"name": "classifier", "hyperparameters": {"layers": [64, 10], "momentum": 0.9,
                                                                  "scaffold": True}}},
         "algorithm.hyperparameters", "scaffold needs optimizer 'sgd' with momentum 0"),
        ({"strategy": {"name": "mode"}}, "strategy.name", "unknown strategy 'mode'"),
        ({"strategy": {"name": "krum"}}, "strategy.options", "f: Field required"),
        ({"strategy": {"server_optimizer": {"name": "lamb"}}}, "strategy.server_optimizer.name",
         "unknown server optimizer 'lamb'"),
        ({"strategy": {"server_optimizer": {"name": "sgd", "options": {"nesterov": True}}}},
         "strategy.server_optimizer.options", "nesterov: Extra inputs are not permitted"),
    ],
)
def test_a_bad_spec_is_refused_naming_its_field(overrides: dict, field: str, reason: str) -> None:
    with pytest.raises(FLError) as caught:
        RunPlan.of(spec(**overrides))
    message = str(caught.value)
    assert message.startswith(f"{field}: ") and reason in message


def test_a_run_without_data_sources_is_refused() -> None:
    with pytest.raises(FLError, match="^datasets: a run needs at least one data source"):
        RunPlan.of(spec(), 64, 0)


def test_scores_name_the_metrics_that_diverged() -> None:
    plan = RunPlan.of(spec(), 64, 3)
    params = {k: torch.full_like(v, math.inf) for k, v in plan.init_params().items()}
    test = LocalData(torch.rand(5, 64), torch.zeros(5, dtype=torch.int64))
    scores = plan.scores(params, {"train_loss": math.nan, "train_accuracy": 0.5}, test)
    assert scores.train == {"train_accuracy": 0.5}
    assert "train.train_loss" in scores.diverged and "test.loss" in scores.diverged
    assert all(math.isfinite(v) for v in scores.test.values())


# ---------------------------------------------------------------------------------------------- same math

SPECS = {
    "fedavg": {},
    "fedavgm": {"strategy": {"name": "fedavg",
                             "server_optimizer": {"name": "sgd", "options": {"momentum": 0.9}}}},
    "median+adam": {"strategy": {"name": "median",
                                 "server_optimizer": {"name": "adam", "options": {"lr": 0.05}}}},
    "scaffold": {"algorithm": SCAFFOLD},
    "preprocessing": {"preprocessing": {"scale": "standardise"}},
}


def clients_data() -> tuple[SimDataset, list[np.ndarray]]:
    """Three clients' digits: 60 training rows each."""
    digits = load_dataset("digits")
    train = LocalData(digits.train.x[: 3 * ROWS], digits.train.y[: 3 * ROWS])
    test = LocalData(digits.test.x[:100], digits.test.y[:100])
    parts = [np.arange(i * ROWS, (i + 1) * ROWS) for i in range(3)]
    return SimDataset("digits", train, test, digits.license), parts


def simulated(project: ProjectCreate, dataset: SimDataset, parts: list[np.ndarray]) -> Params:
    settings = SimulationSettings(clients=len(parts), engine="loop", partition="iid")
    simulation = Simulation(project, settings, dataset=dataset, parts=parts)
    return simulation.run(LoopEngine(simulation.setup)).params


@pytest.fixture
def hub(db_url: str, tmp_path: Path) -> Iterator[tuple[HubState, sessionmaker[Session]]]:
    engine = make_engine(db_url)
    migrate(engine)
    hub_identity.start(engine, HubKey.generate())
    sessions: sessionmaker[Session] = session_factory(engine)
    blobs = BlobStore(tmp_path / "blobs")
    yield HubState(sessions=sessions, blobs=blobs, cache=TensorCache(blobs), broker=Broker(),
                   code_version="t"), sessions
    engine.dispose()


DIGITS_SCHEMA = {"features": [{"name": "pixels", "dtype": "float32", "shape": [64]}],
                 "target": {"name": "digit", "dtype": "int64"}}


class Nodes:
    """The three clients as nodes answer their tasks: the algorithm's local update from the task's params on
    the client's rows, with the simulator's seed for that client and round, and SCAFFOLD's ``c_i`` kept
    between rounds as the node agent keeps it."""

    def __init__(
        self, project: ProjectCreate, state: HubState, dataset: SimDataset, parts: list[np.ndarray]
    ) -> None:
        self.plan, self.state, self.project = RunPlan.of(project), state, project
        ids = client_ids(len(parts))
        self.clients = {org: (ids[i], LocalData(dataset.train.x[parts[i]], dataset.train.y[parts[i]]))
                        for i, org in enumerate(ORGS)}
        self.controls: dict[str, Params] = {}

    def answer(self, org: str, task: TaskOut) -> bytes:
        client_id, data = self.clients[org]
        if task.kind == TaskKind.stats:
            layout = preprocessing.layout(task.spec.preprocessing, preprocessing.feature_names_of([("pixels", 64)]))
            stats = preprocessing.column_stats(data.x, layout, 64)
            return encode_update(preprocessing.to_tensors(stats), UpdateMeta(num_examples=stats.rows, compute_s=0.0))
        data = preprocessing.transform_data(task.preprocessing, data)
        if task.kind == TaskKind.evaluate:
            result = TaskResult(num_examples=ROWS, metrics={"loss": 1.0}, compute_s=0.0)
            return result.model_dump_json().encode()
        params, control = scaffold.split_broadcast(self.state.cache.get(task.params_sha256))
        seed = derive_seed(self.project.seed, "fit", task.round, client_id)
        algorithm, hp = self.plan.algorithm, self.plan.hp
        if control is None:
            update = algorithm.local_update(hp, params, data, seed)
        else:
            own = self.controls.get(client_id) or scaffold.zero_control(params)
            update = algorithm.local_update(hp, params, data, seed, controls=scaffold.Controls(control, own))
            self.controls[client_id] = scaffold.advanced(own, scaffold.split_deltas(update.tensors)[1])
        meta = UpdateMeta(num_examples=update.num_examples, metrics=update.metrics, compute_s=0.0)
        return encode_update(update.tensors, meta)


def driven(state: HubState, run_id: int, orgs: dict[str, Principal], nodes: Nodes, drive) -> Params:
    """The run driven to completion in this process, each task answered by ``nodes``; its final params."""
    drive(state, run_id, orgs, nodes.answer)
    with state.sessions() as session:
        run = session.get(Run, run_id)
        assert (run.status, run.error) == ("completed", None)
        return state.cache.get(run.params_sha256)


@pytest.mark.parametrize("case", sorted(SPECS))
def test_the_simulator_and_the_hub_driver_give_the_same_params(hub, case: str, drive_in_process,
                                                               seed_run) -> None:
    """Bitwise: the same updates (same rows, seeds and params), aggregated in the same canonical client order
    (the hub's dataset ids sort like the simulator's client ids) and closed by the same ``close_round``."""
    state, sessions = hub
    project = spec(**SPECS[case])
    dataset, parts = clients_data()
    expected = simulated(project, dataset, parts)
    run_id, orgs = seed_run(sessions, project, ORGS, "digits", DIGITS_SCHEMA, ROWS)
    got = driven(state, run_id, orgs, Nodes(project, state, dataset, parts), drive_in_process)
    assert set(got) == set(expected)
    initial = RunPlan.of(project, 64, 3).init_params()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
        assert not torch.equal(got[name], initial[name]), f"{name} never moved"
