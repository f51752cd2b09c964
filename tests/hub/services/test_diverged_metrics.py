"""Accepted updates whose metrics diverge cannot fail a run: the run driver (in this process, on SQLite and
PostgreSQL) leaves NaN/infinite metrics out of the rounds and the ledger and names them in ``diverged``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from consortium.crypto import canonical_json
from consortium.fl.core import MAX_ABS_VALUE, parse_hyperparams
from consortium.fl.registry import get_algorithm
from consortium.hub.db.models import LedgerEntry, Model, Run
from consortium.hub.state import HubState
from consortium.hub.services import ledger
from consortium.hub.services import runs as run_service
from consortium.hub.services.identity import Principal
from consortium.ledger.chain import verify_chain
from consortium.codec import encode_update
from consortium.protocol import RunProgress, TaskKind, TaskOut, TaskResult, UpdateMeta

HYPERPARAMETERS = {"layers": [4, 8, 8, 8, 3], "lr": 0.1}
HUGE = 1e308
"""A finite metric whose example-weighted sum overflows to infinity."""


@pytest.fixture
def hub(db_url: str, tmp_path: Path, make_two_org_run) -> Iterator[tuple[HubState, int, dict[str, Principal]]]:
    """A hub state with a two-org run of a 4-layer classifier, and the run's id and org principals."""
    yield from make_two_org_run(db_url, tmp_path / "blobs", "diverging", HYPERPARAMETERS, torch.randint(0, 3, (30,)))


def diverging_answer(task: TaskOut) -> bytes:
    """Updates at the value ceiling (accepted) whose hub-side evaluation overflows through four layers, with
    finite metrics whose weighted means overflow."""
    if task.kind == TaskKind.evaluate:
        return TaskResult(num_examples=20, metrics={"loss": HUGE, "accuracy": 0.5}, compute_s=0.1
                          ).model_dump_json().encode()
    algorithm = get_algorithm("classifier")
    hp = parse_hyperparams(algorithm, HYPERPARAMETERS)
    tensors = {name: torch.full(t.shape, MAX_ABS_VALUE) for name, t in algorithm.init(hp, 4, 0).items()}
    evaluation = (TaskResult(num_examples=20, metrics={"loss": HUGE, "accuracy": 0.25}, compute_s=0.1)
                  if task.evaluate_first else None)
    metrics = {"train_loss": HUGE, "train_accuracy": 0.5}
    return encode_update(tensors, UpdateMeta(num_examples=80, metrics=metrics, compute_s=0.1, evaluation=evaluation))


def test_metrics_that_diverge_are_named_not_stored_and_the_run_completes(hub, drive_in_process) -> None:
    state, run_id, orgs = hub
    drive_in_process(state, run_id, orgs, lambda _org, task: diverging_answer(task), timeout=60.0)
    with state.sessions() as session:
        run = session.get(Run, run_id)
        assert (run.status, run.error) == ("completed", None)
        progress = run_service.progress(session, run)
        RunProgress.model_validate_json(progress.model_dump_json())
        entries = list(session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)))
        card = session.scalar(select(Model).where(Model.run_id == run_id)).card
    first, second = progress.rounds
    assert first.diverged == ["train.train_loss", "test.loss", "federated_eval.loss"]
    assert second.diverged == ["train.train_loss", "test.loss", "federated_eval.loss"]
    for rnd in (first, second):
        assert rnd.train == {"train_accuracy": 0.5}
        assert set(rnd.test) == {"accuracy"}
        assert rnd.federated_eval == {"accuracy": 0.25 if rnd is first else 0.5}
    completed = [e.payload for e in entries if e.event_type == "round.completed"]
    evaluated = [e.payload for e in entries if e.event_type == "round.evaluated"]
    assert [p["diverged"] for p in completed] == [["train.train_loss", "test.loss"]] * 2
    assert [p["diverged"] for p in evaluated] == [["federated_eval.loss"]] * 2
    assert all(set(p["test"]) == {"accuracy"} for p in completed)
    assert verify_chain(ledger.to_chained(e) for e in entries).ok
    for entry in entries:
        canonical_json(entry.payload)
    assert [r["diverged"] for r in card["metrics_per_round"]] == [first.diverged, second.diverged]


def test_rounds_without_diverged_metrics_keep_their_json_shape(hub, drive_in_process) -> None:
    state, run_id, orgs = hub
    algorithm = get_algorithm("classifier")
    params = algorithm.init(parse_hyperparams(algorithm, HYPERPARAMETERS), 4, 0)

    def calm(task: TaskOut) -> bytes:
        if task.kind == TaskKind.evaluate:
            return TaskResult(num_examples=20, metrics={"loss": 1.0}, compute_s=0.1).model_dump_json().encode()
        evaluation = TaskResult(num_examples=20, metrics={"loss": 1.0}, compute_s=0.1)
        return encode_update(params, UpdateMeta(num_examples=80, metrics={"train_loss": 1.0}, compute_s=0.1,
                                                evaluation=evaluation if task.evaluate_first else None))

    drive_in_process(state, run_id, orgs, lambda _org, task: calm(task), timeout=60.0)
    with state.sessions() as session:
        progress = run_service.progress(session, session.get(Run, run_id))
        entries = list(session.scalars(select(LedgerEntry).where(LedgerEntry.event_type.like("round.%"))))
    assert progress.run.status == "completed"
    assert [r.diverged for r in progress.rounds] == [[], []]
    assert all("diverged" not in r.model_dump(mode="json") for r in progress.rounds)
    assert all("diverged" not in e.payload for e in entries)
    assert all(set(r.test) == {"loss", "accuracy"} for r in progress.rounds)
