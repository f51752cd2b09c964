"""What the hub refuses from a node (on SQLite and PostgreSQL): each refused answer closes its task as rejected
at once, with a ``task.rejected`` ledger entry, and the task cannot be answered again; an answer for another
org's task is a 404 and a ``security.foreign_task`` entry, and that task is left alone."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.fl.core import parse_hyperparams
from consortium.fl.registry import get_algorithm
from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import Dataset, LedgerEntry, Org, Project, ProjectDataset, Run, Task
from consortium.hub.live import TaskRow
from consortium.hub.services import ledger, run_store
from consortium.hub.services import answer_rules as answer_rules_module
from consortium.hub.services.answer_rules import Source, answer_rules
from consortium.hub.services.run_state_cache import RunStateCache
from consortium.hub.services import runs as run_service
from consortium.hub.services.errors import Conflict, Gone, NotFound
from consortium.hub.services.identity import Principal
from consortium.hub.tensor_cache import TensorCache
from consortium.ledger.chain import verify_chain
from consortium.codec import encode_tensors, encode_update
from consortium.protocol import Role, TaskRefusal, TaskResult, UpdateMeta
from consortium.scenario import digits_spec

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ROWS = 100
HYPERPARAMETERS = {"layers": [4, 8, 3], "lr": 0.1}


@dataclass
class World:
    session: Session
    blobs: BlobStore
    cache: TensorCache
    run_id: int
    orgs: dict[str, Principal]
    datasets: dict[str, int]
    params_sha: str
    params: dict[str, torch.Tensor]

    def open(self, kind: str = "fit") -> dict[str, int]:
        """A phase of ``kind`` with one task per org; the task ids by org name."""
        orgs = list(self.orgs)
        opened = run_store.open_phase(
            self.session, self.run_id, 1, kind, None if kind == "init" else self.params_sha,
            [run_store.NewTask(self.orgs[o].org_id, self.datasets[o], seed=1) for o in orgs],
            NOW + timedelta(minutes=5),
        )
        self.session.commit()
        return dict(zip(orgs, opened.task_ids, strict=True))

    def upload(self, org: str, task_id: int, payload: bytes, **kwargs):
        return run_service.submit_update(self.session, self.blobs, self.cache, self.orgs[org], task_id, payload,
                                         NOW, **kwargs)

    def result(self, org: str, task_id: int, body: bytes | TaskResult, **kwargs):
        payload = body.model_dump_json().encode() if isinstance(body, TaskResult) else body
        return run_service.submit_result(self.session, self.orgs[org], task_id, payload, NOW, **kwargs)

    def status(self, task_id: int) -> tuple[str, str | None]:
        self.session.expire_all()
        task = self.session.get(Task, task_id)
        return task.status, task.error

    def entries(self, event_type: str) -> list[LedgerEntry]:
        self.session.expire_all()
        return list(self.session.scalars(
            select(LedgerEntry).where(LedgerEntry.event_type == event_type).order_by(LedgerEntry.seq)
        ))


@pytest.fixture
def world(session: Session, tmp_path: Path) -> World:
    orgs, datasets = {}, {}
    schema = {"features": [{"name": f"f{i}", "dtype": "float64"} for i in range(4)],
              "target": {"name": "label", "dtype": "int64"}}
    for name in ("north", "south"):
        org = Org(name=name)
        session.add(org)
        session.flush()
        data = Dataset(org_id=org.id, name="digits", schema=schema, rows=ROWS, sha256="0" * 64,
                       license="CC0-1.0", visibility="members", file_format="csv")
        session.add(data)
        session.flush()
        orgs[name] = Principal(kind="org", name=name, role=Role.steward, org_id=org.id, org_name=name)
        datasets[name] = data.id
    spec = digits_spec("answers", list(orgs), rounds=1, min_nodes=1,
                       algorithm={"name": "classifier", "hyperparameters": HYPERPARAMETERS})
    project = Project(name="answers", spec=spec.model_dump(mode="json"), spec_hash="1" * 64, proposer="admin")
    session.add(project)
    session.flush()
    session.add_all([ProjectDataset(project_id=project.id, dataset_id=d) for d in datasets.values()])
    run = Run(project_id=project.id)
    session.add(run)
    session.commit()
    blobs = BlobStore(tmp_path / "blobs")
    cache = TensorCache(blobs)
    algorithm = get_algorithm("classifier")
    params = algorithm.init(parse_hyperparams(algorithm, HYPERPARAMETERS), 4, seed=0)
    digest = blobs.put(encode_tensors(params))
    return World(session, blobs, cache, run.id, orgs, datasets, digest, params)


def meta(**overrides) -> UpdateMeta:
    fields = {"num_examples": 80, "metrics": {"train_loss": 0.5}, "compute_s": 0.1,
              "evaluation": TaskResult(num_examples=20, metrics={"accuracy": 0.5}, compute_s=0.01)}
    return UpdateMeta.model_validate(fields | overrides)


def honest(world: World) -> bytes:
    return encode_update({k: v + 0.01 for k, v in world.params.items()}, meta())


def raw_update(tensors: dict[str, torch.Tensor], header: dict) -> bytes:
    """An upload whose JSON header says exactly ``header`` (``json.dumps`` writes NaN and Infinity)."""
    return encode_tensors(tensors, {"update": json.dumps(header)})


def tampered(world: World, name: str, value: float) -> dict[str, torch.Tensor]:
    tensors = {k: v.clone() for k, v in world.params.items()}
    tensors[name].view(-1)[0] = value
    return tensors


GOOD_HEADER = {"num_examples": 80, "metrics": {"train_loss": 0.5}, "compute_s": 0.1}
EVALUATION = {"num_examples": 20, "metrics": {"accuracy": 0.5}, "compute_s": 0.01}

BAD_UPDATES = {
    "num_examples 10^12": (lambda w: encode_update(w.params, meta(num_examples=10**12)),
                           "num_examples = 1000000000000 is outside [1, 100] (north/digits registered 100 rows)"),
    "num_examples one above the rows": (lambda w: encode_update(w.params, meta(num_examples=ROWS + 1)),
                                        "num_examples = 101 is outside [1, 100]"),
    "num_examples 0": (lambda w: encode_update(w.params, meta(num_examples=0)), "num_examples = 0 is outside"),
    "num_examples 2^60": (lambda w: encode_update(w.params, meta().model_copy(update={"num_examples": 2**60})),
                          "num_examples: Input should be less than or equal to 9007199254740992"),
    "evaluation num_examples 10^12": (
        lambda w: encode_update(w.params, meta(evaluation=EVALUATION | {"num_examples": 10**12})),
        "its evaluation: num_examples = 1000000000000 is outside [1, 100] (north/digits registered 100 rows)"),
    "tensor 3e38": (lambda w: encode_update(tampered(w, "layers.0.weight", 3e38), meta()),
                    "'layers.0.weight' has a value of magnitude 3e+38, above the hub's ceiling 1e+15"),
    "tensor NaN": (lambda w: encode_update(tampered(w, "layers.2.bias", float("nan")), meta()),
                   "'layers.2.bias' contains non-finite values"),
    "tensor -inf": (lambda w: encode_update(tampered(w, "layers.0.bias", float("-inf")), meta()),
                    "'layers.0.bias' contains non-finite values"),
    "wrong shape": (lambda w: encode_update(w.params | {"layers.0.bias": torch.zeros(9)}, meta()),
                    "'layers.0.bias' has shape (9,), expected (8,)"),
    "wrong dtype": (lambda w: encode_update({k: v.double() for k, v in w.params.items()}, meta()),
                    "has dtype torch.float64, expected torch.float32"),
    "metric NaN": (lambda w: raw_update(w.params, GOOD_HEADER | {"metrics": {"train_loss": float("nan")}}),
                   '"train_loss": NaN'),
    "metric inf": (lambda w: raw_update(w.params, GOOD_HEADER | {"metrics": {"train_loss": float("inf")}}),
                   '"train_loss": Infinity'),
    "compute_s inf": (lambda w: raw_update(w.params, GOOD_HEADER | {"compute_s": float("inf")}),
                      '"compute_s": Infinity'),
    "evaluation metric NaN": (
        lambda w: raw_update(w.params, GOOD_HEADER | {"evaluation": EVALUATION | {"metrics": {"a": float("nan")}}}),
        '{"a": NaN'),
    "too many metrics": (
        lambda w: raw_update(w.params, GOOD_HEADER | {"metrics": {f"m{i}": 0.0 for i in range(65)}}),
        "metrics: Dictionary should have at most 64 items"),
    "not safetensors": (lambda w: b"\x00" * 16, "not a valid safetensors payload"),
    "no metadata": (lambda w: encode_tensors(w.params), "update has no 'update' metadata"),
    "a thousand extra tensors": (lambda w: encode_update(w.params | {f"extra{i:04d}": torch.zeros(1)
                                                                     for i in range(1000)}, meta()),
                                 "unexpected ['extra0000', 'extra0001'"),
}


@pytest.mark.parametrize("case", list(BAD_UPDATES))
def test_a_bad_update_closes_its_task_as_rejected_with_a_ledger_entry(world: World, case: str) -> None:
    make, reason = BAD_UPDATES[case]
    tasks = world.open()
    with pytest.raises(run_service.Rejected) as info:
        world.upload("north", tasks["north"], make(world))
    assert info.value.status_code == 422
    assert info.value.message.startswith("update rejected: ") and reason in info.value.message
    assert info.value.answer.status == "rejected" and info.value.task.id == tasks["north"]
    status, error = world.status(tasks["north"])
    assert status == "rejected" and reason in error and len(error) <= run_service.MAX_REASON
    [entry] = world.entries("task.rejected")
    assert entry.actor == "org:north"
    assert entry.payload == {"run_id": world.run_id, "round": 1, "task_id": tasks["north"], "kind": "fit",
                             "org": "north", "reason": error}
    with pytest.raises(Gone, match="was rejected"):
        world.upload("north", tasks["north"], honest(world))
    assert world.status(tasks["south"])[0] == "pending"
    world.upload("south", tasks["south"], honest(world))
    assert verify_chain([ledger.to_chained(e) for e in world.session.scalars(
        select(LedgerEntry).order_by(LedgerEntry.seq))]).ok


def test_an_honest_update_at_the_bounds_is_accepted_with_the_drivers_rules_too(world: World) -> None:
    tasks = world.open()
    at_bounds = encode_update({k: v.clamp(-1, 1) for k, v in world.params.items()},
                              meta(num_examples=ROWS, evaluation=EVALUATION | {"num_examples": 1}))
    task, answer = world.upload("north", tasks["north"], at_bounds)
    assert answer.status == "done" and answer.result["num_examples"] == ROWS
    rules = run_service.answer_rules(world.session, world.run_id)
    assert rules.sources[world.datasets["south"]] == Source("south/digits", ROWS)
    _, answer = world.upload("south", tasks["south"], encode_update(world.params, meta(num_examples=1)),
                                rules={world.run_id: rules}.get)
    assert answer.status == "done"
    assert world.entries("task.rejected") == []


def test_the_drivers_rules_bound_an_environment_by_its_hyperparameters(world: World) -> None:
    ppo = get_algorithm("ppo")
    hp = parse_hyperparams(ppo, {"num_envs": 2, "rollout_steps": 50, "eval_episodes": 10})
    rules = run_service.AnswerRules(ppo, hp, 4, {7: run_service.AnswerRules.source("north/cartpole",
                                                                                   "environment", 0)})
    rules.check_examples(7, 100, evaluation=False, what="fit update")
    rules.check_examples(7, 10, evaluation=True, what="evaluation result")
    with pytest.raises(ValueError, match=r"= 101 is outside \[1, 100\] \(ppo counts at most 100 per task in"):
        rules.check_examples(7, 101, evaluation=False, what="fit update")
    with pytest.raises(ValueError, match=r"num_examples = 11 is outside \[1, 10\]"):
        rules.check_examples(7, 11, evaluation=True, what="evaluation result")


def test_an_update_for_an_evaluate_task_is_rejected(world: World) -> None:
    tasks = world.open("evaluate")
    with pytest.raises(run_service.Rejected, match="is a evaluate task; this endpoint takes fit/init/stats updates"):
        world.upload("north", tasks["north"], honest(world))
    assert world.status(tasks["north"])[0] == "rejected"


BAD_RESULTS = {
    "NaN metric": (b'{"num_examples": 20, "metrics": {"accuracy": NaN}, "compute_s": 0.1}',
                   "metrics.accuracy: Input should be a finite number"),
    "Infinity metric": (b'{"num_examples": 20, "metrics": {"loss": Infinity}, "compute_s": 0.1}',
                        "metrics.loss: Input should be a finite number"),
    "-Infinity compute_s": (b'{"num_examples": 20, "metrics": {}, "compute_s": -Infinity}',
                            "compute_s: Input should be a finite number"),
    "num_examples 10^12": (b'{"num_examples": 1000000000000, "metrics": {"accuracy": 1.0}, "compute_s": 0.1}',
                           "evaluation result: num_examples = 1000000000000 is outside [1, 100] (north/digits"),
    "num_examples 0": (b'{"num_examples": 0, "metrics": {}, "compute_s": 0.1}', "num_examples = 0 is outside"),
    "not JSON": (b'{"num_examples": 20,', "Invalid JSON"),
    "unknown field": (b'{"num_examples": 20, "metrics": {}, "compute_s": 0.1, "weight": 5}',
                      "weight: Extra inputs are not permitted"),
}


@pytest.mark.parametrize("case", list(BAD_RESULTS))
def test_a_bad_evaluation_result_closes_its_task_as_rejected(world: World, case: str) -> None:
    body, reason = BAD_RESULTS[case]
    tasks = world.open("evaluate")
    with pytest.raises(run_service.Rejected) as info:
        world.result("north", tasks["north"], body)
    assert info.value.message.startswith("result rejected: ") and reason in info.value.message
    assert world.status(tasks["north"])[0] == "rejected"
    [entry] = world.entries("task.rejected")
    assert entry.payload["kind"] == "evaluate" and reason in entry.payload["reason"]
    with pytest.raises(Gone):
        world.result("north", tasks["north"], TaskResult(num_examples=20, metrics={}, compute_s=0.1))
    _, answer = world.result("south", tasks["south"], TaskResult(num_examples=20, metrics={"a": 1.0},
                                                                 compute_s=0.1))
    assert answer.status == "done" and answer.result["metrics"] == {"a": 1.0}


def test_answers_for_another_orgs_task_are_404_and_a_security_event(world: World) -> None:
    tasks = world.open()
    for attempt in (lambda: world.upload("south", tasks["north"], honest(world)),
                    lambda: world.result("south", tasks["north"], b'{"num_examples": 1}'),
                    lambda: run_service.refuse(world.session, world.orgs["south"], tasks["north"],
                                               TaskRefusal(reason="no"), NOW)):
        with pytest.raises(NotFound, match=f"no task {tasks['north']}"):
            attempt()
    entries = world.entries("security.foreign_task")
    assert [(e.actor, e.payload["task_id"], e.payload["answer"]) for e in entries] == [
        ("org:south", tasks["north"], "update"), ("org:south", tasks["north"], "result"),
        ("org:south", tasks["north"], "refusal"),
    ]
    assert world.status(tasks["north"]) == ("pending", None)
    with pytest.raises(NotFound):
        world.upload("south", 10**6, honest(world))
    assert len(world.entries("security.foreign_task")) == 3
    _, answer = world.upload("north", tasks["north"], honest(world))
    assert answer.status == "done"


def test_a_bad_answer_to_a_closed_task_is_not_rejected_again(world: World) -> None:
    tasks = world.open()
    world.upload("north", tasks["north"], honest(world))
    with pytest.raises(Conflict, match="already has a result"):
        world.upload("north", tasks["north"], encode_update(world.params, meta(num_examples=10**12)))
    stale = TaskRow(tasks["north"], world.orgs["north"].org_id, world.run_id, world.datasets["north"], "fit",
                    "pending", world.params_sha)
    with pytest.raises(Conflict, match="already has a result"):
        world.upload("north", tasks["north"], b"junk", known=stale)
    assert world.status(tasks["north"])[0] == "done"
    assert world.entries("task.rejected") == []


def test_another_replicas_run_has_its_rules_read_once_per_preprocessing_state(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []
    cache = RunStateCache(lambda session, run: reads.append(run.id) or answer_rules(session, run.id), capacity=2)
    first = cache.get(world.session, world.run_id)
    assert first.num_features == run_service.answer_rules(world.session, world.run_id).num_features
    assert cache.get(world.session, world.run_id) is first and reads == [world.run_id]
    run = world.session.get(Run, world.run_id)
    run.preprocessing = {"fitted": "stand-in"}  # a fitted run is another state: read again
    monkeypatch.setattr(answer_rules_module.FittedPreprocessing, "model_validate",
                        lambda _value: type("Fitted", (), {"output_features": 7})())
    fitted = cache.get(world.session, world.run_id)
    assert fitted is not first and fitted.num_features == 7 and reads == [world.run_id] * 2
    assert cache.get(world.session, world.run_id) is fitted and reads == [world.run_id] * 2
    with pytest.raises(LookupError, match="run 999999 does not exist"):
        cache.get(world.session, 999999)
