"""The database side of handing out tasks, on SQLite and PostgreSQL: no task of an ended run is claimed, and a
late answer to one hears that its run ended (so the node forgets the run instead of retraining)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from consortium.hub.db.models import Dataset, Org, Project, Run, Task
from consortium.hub.services import run_store
from consortium.hub.services import runs as run_service
from consortium.hub.services import task_claims
from consortium.hub.services.errors import Gone
from consortium.hub.services.identity import Principal
from consortium.hub.services.projects import spec_hash
from consortium.hub.services.run_state_cache import RunStateCache
from consortium.hub.services.task_messages import ProjectMessages, task_json
from consortium.protocol import Role, TaskOut, TaskResult
from consortium.scenario import digits_spec

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TEST_SET = "ab" * 32


def claim(session: Session, caller: Principal, **kwargs):
    """The caller's claim alone (a batch of one)."""
    return task_claims.claim_many(session, [caller.org_id], NOW, **kwargs).get(caller.org_id)


@pytest.fixture
def open_task(session: Session) -> tuple[Principal, int, int]:
    """An org's pending evaluate task in a running run: (the org as caller, run id, task id)."""
    org = Org(name="north")
    session.add(org)
    session.flush()
    dataset = Dataset(org_id=org.id, name="digits", schema={}, rows=10, sha256="0" * 64, license="CC0-1.0",
                      visibility="private", file_format="csv")
    session.add(dataset)
    spec = digits_spec("claims", ["north"], rounds=1, min_nodes=1)
    project = Project(name=spec.name, spec=spec.model_dump(mode="json"), spec_hash=spec_hash(spec),
                      proposer="admin", test_set_sha256=TEST_SET)
    session.add(project)
    session.flush()
    run = Run(project_id=project.id)
    session.add(run)
    session.flush()
    opened = run_store.open_phase(session, run.id, 1, "evaluate", None,
                                  [run_store.NewTask(org.id, dataset.id, 3)], NOW + timedelta(seconds=30))
    session.commit()
    return Principal("org", "north", Role.steward, org.id, "north"), run.id, opened.task_ids[0]


def test_an_open_task_of_a_running_run_is_claimed_with_its_test_set(session, open_task) -> None:
    caller, run_id, task_id = open_task
    task = claim(session, caller)
    assert task is not None and (task.id, task.run_id) == (task_id, run_id)
    assert task.test_set_sha256 == TEST_SET
    assert session.get(Task, task_id).status == "claimed"


def test_a_replica_composes_a_claimed_task_from_its_runs_kept_messages(session, open_task) -> None:
    """Another replica's task (no board message here) reads as the same message whether the run's messages
    are read afresh or kept per run; kept, they are read once for all the run's tasks."""
    caller, run_id, task_id = open_task
    fresh = claim(session, caller)
    reads: list[int] = []
    kept = RunStateCache(lambda s, run: reads.append(run.id) or ProjectMessages.of(s, run.project))
    for _ in range(3):
        again = claim(session, caller, messages=kept.get)
        assert again == fresh
    assert reads == [run_id]
    assert fresh.round == 1 and fresh.id == task_id and fresh.kind == "evaluate" and fresh.seed == 3


@pytest.mark.parametrize("status", ["failed", "completed"])
def test_no_task_of_an_ended_run_is_claimed(session, open_task, status: str) -> None:
    """Even in the moment before the driver's failure commits the task's cancellation."""
    caller, run_id, task_id = open_task
    session.execute(update(Run).where(Run.id == run_id).values(status=status))
    session.commit()
    assert claim(session, caller) is None
    assert session.get(Task, task_id).status == "pending"


def answer(session: Session, caller: Principal, task_id: int) -> None:
    body = TaskResult(num_examples=1, metrics={}, compute_s=0).model_dump_json().encode()
    run_service.submit_result(session, caller, task_id, body, NOW)


def test_a_late_answer_to_a_failed_runs_task_hears_that_the_run_failed(session, open_task) -> None:
    caller, run_id, task_id = open_task
    session.execute(update(Run).where(Run.id == run_id).values(
        status="failed", error="round 1: 0 of the required min_nodes=1 nodes answered"))
    session.execute(update(Task).where(Task.id == task_id).values(status="cancelled"))
    session.commit()
    with pytest.raises(Gone) as info:
        answer(session, caller, task_id)
    assert info.value.message == (f"run {run_id} failed: round 1: 0 of the required min_nodes=1 nodes "
                                  f"answered; its task {task_id} is not needed any more")
    assert info.value.fields == {"run_id": run_id, "run_status": "failed"}


def test_a_task_dropped_from_a_running_run_is_gone_without_ending_the_run(session, open_task) -> None:
    caller, run_id, task_id = open_task
    session.execute(update(Task).where(Task.id == task_id).values(status="dropped"))
    session.commit()
    with pytest.raises(Gone) as info:
        answer(session, caller, task_id)
    assert info.value.message == f"task {task_id} was dropped; its round has moved on"
    assert info.value.fields == {}
    assert claim(session, caller) is None


def orgs_with_datasets(session: Session, names: list[str]) -> tuple[list[Org], list[Dataset]]:
    """Orgs of these names, each with one dataset (flushed, not committed)."""
    orgs = [Org(name=name) for name in names]
    session.add_all(orgs)
    session.flush()
    datasets = [Dataset(org_id=org.id, name="digits", schema={}, rows=10, sha256="0" * 64, license="CC0-1.0",
                        visibility="private", file_format="csv") for org in orgs]
    session.add_all(datasets)
    session.flush()
    return orgs, datasets


def test_one_batch_claims_each_orgs_oldest_task_and_leaves_out_orgs_without_one(session, open_task) -> None:
    caller, run_id, first = open_task
    orgs, datasets = orgs_with_datasets(session, ["east", "west", "idle"])
    later = run_store.open_phase(session, run_id, 2, "evaluate", None,
                                 [run_store.NewTask(caller.org_id, datasets[0].id, 4),
                                  run_store.NewTask(orgs[0].id, datasets[0].id, 5),
                                  run_store.NewTask(orgs[1].id, datasets[1].id, 6)], NOW + timedelta(seconds=30))
    session.commit()
    claimed = task_claims.claim_many(session, [caller.org_id, orgs[0].id, orgs[1].id, orgs[2].id], NOW)
    assert {org: task.id for org, task in claimed.items()} == {
        caller.org_id: first, orgs[0].id: later.task_ids[1], orgs[1].id: later.task_ids[2]}
    assert claimed[orgs[1].id].round == 2 and claimed[orgs[1].id].seed == 6
    assert {task.id for task in session.scalars(select(Task).where(Task.status == "claimed"))} == {
        first, later.task_ids[1], later.task_ids[2]}
    assert task_claims.still_open(session, [first, later.task_ids[0], 10**6]) == {first, later.task_ids[0]}


def test_a_batch_takes_two_statements_whatever_its_size(session, open_task) -> None:
    """Once the run's messages are kept, a replica woken by a phase of N orgs reads the tasks (with what their
    messages need) and claims them: not a query per node, nor one for the run's preprocessing state."""
    caller, run_id, _ = open_task
    orgs, datasets = orgs_with_datasets(session, [f"org-{n}" for n in range(8)])
    run_store.open_phase(session, run_id, 2, "evaluate", None,
                         [run_store.NewTask(d.org_id, d.id, n) for n, d in enumerate(datasets)],
                         NOW + timedelta(seconds=30))
    session.commit()
    kept = RunStateCache(lambda s, run: ProjectMessages.of(s, run.project))
    claim(session, caller, messages=kept.get)  # the run's messages are read once, here
    statements: list[str] = []
    listen = (session.get_bind(), "before_cursor_execute")

    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement.split()[0].upper())

    event.listen(*listen, count)
    try:
        claimed = task_claims.claim_many(session, [o.id for o in orgs], NOW, messages=kept.get)
    finally:
        event.remove(*listen, count)
    assert sorted(claimed) == sorted(o.id for o in orgs)
    assert [task.seed for _, task in sorted(claimed.items())] == list(range(len(orgs)))
    assert statements == ["SELECT", "UPDATE"]


def test_a_composed_task_renders_the_same_json_as_pydantic(session, open_task) -> None:
    """The shared part is rendered once per project version; the message parses back to the same task."""
    caller, _, _ = open_task
    task = claim(session, caller)
    rendered = task_json(task)
    assert rendered == task.model_dump_json()
    assert TaskOut.model_validate_json(rendered).model_dump() == task.model_dump()
    assert task_json(TaskOut.model_validate_json(rendered)) == TaskOut.model_validate_json(rendered).model_dump_json()


def test_has_open_task_sees_what_a_claim_would_hand_out(session, open_task) -> None:
    caller, run_id, task_id = open_task
    assert task_claims.has_open_task(session, caller.org_id, NOW)
    past_its_deadline = NOW + timedelta(days=365)
    assert not task_claims.has_open_task(session, caller.org_id, past_its_deadline)
    assert session.get(Task, task_id).status == "pending", "looking claims nothing"
    session.execute(update(Run).where(Run.id == run_id).values(status="failed"))
    session.commit()
    assert not task_claims.has_open_task(session, caller.org_id, NOW)
