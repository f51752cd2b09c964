"""A run whose model does not beat the majority class of the hub test set completes with a warning: on every
round's baseline, the progress (also for a watcher that has seen the last round), the card and the ledger."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from consortium.codec import encode_update
from consortium.hub.db.models import LedgerEntry, Model, Run
from consortium.hub.services import runs as run_service
from consortium.hub.services.identity import Principal
from consortium.hub.state import HubState
from consortium.protocol import TaskKind, TaskOut, TaskResult, UpdateMeta

HYPERPARAMETERS = {"layers": [4, 3], "lr": 0.1}


@pytest.fixture
def hub(db_url: str, tmp_path: Path, make_two_org_run) -> Iterator[tuple[HubState, int, dict[str, Principal]]]:
    """A two-org run whose test set is 90% label 0."""
    yield from make_two_org_run(db_url, tmp_path / "blobs", "stuck", HYPERPARAMETERS,
                                torch.tensor([0] * 27 + [1, 2, 2]))


def always_label_two(task: TaskOut) -> bytes:
    """Updates to a model that always predicts label 2 (the rarest)."""
    if task.kind == TaskKind.evaluate:
        return TaskResult(num_examples=20, metrics={"accuracy": 0.1}, compute_s=0.0).model_dump_json().encode()
    tensors = {"layers.0.weight": torch.zeros(3, 4), "layers.0.bias": torch.tensor([0.0, 0.0, 5.0])}
    return encode_update(tensors, UpdateMeta(num_examples=80, metrics={}, compute_s=0.0))


def test_a_model_below_the_majority_class_completes_with_the_warning_everywhere(hub, drive_in_process) -> None:
    state, run_id, orgs = hub
    drive_in_process(state, run_id, orgs, lambda _org, task: always_label_two(task), timeout=60.0)
    with state.sessions() as session:
        run = session.get(Run, run_id)
        assert run.status == "completed", run.error
        full = run_service.progress(session, run)
        seen_all = run_service.progress(session, run, after_round=2)
        card = session.scalar(select(Model).where(Model.run_id == run_id)).card
        completed = session.scalar(select(LedgerEntry).where(LedgerEntry.event_type == "run.completed"))
        payload = completed.payload
    assert [r.baseline for r in full.rounds] == [{"label": 0, "accuracy": 0.9, "examples": 30}] * 2
    assert full.rounds[-1].test["accuracy"] == pytest.approx(2 / 30)
    assert seen_all.rounds == [] and seen_all.warnings == full.warnings
    assert "does not beat the majority-class baseline 0.9000" in full.warnings[0]
    assert card["baseline"]["majority_class"]["accuracy"] == 0.9 and card["warnings"] == full.warnings
    assert payload["warnings"] == full.warnings
