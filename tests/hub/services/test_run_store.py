"""The run store on SQLite and PostgreSQL: closing a round and opening the next are one transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from consortium.hub.db.models import Dataset, LedgerEntry, Org, Project, Round, Run, Task
from consortium.hub.services import ledger, run_store
from consortium.ledger.chain import verify_chain

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SCOPE = ledger.project_scope(1)


@pytest.fixture
def run_with_orgs(session: Session) -> tuple[int, list[tuple[int, int]]]:
    """A running run and three (org id, dataset id) participants."""
    participants = []
    for name in ("north", "south", "east"):
        org = Org(name=name)
        session.add(org)
        session.flush()
        data = Dataset(org_id=org.id, name="digits", schema={}, rows=10, sha256="0" * 64, license="CC0-1.0",
                       visibility="private", file_format="csv")
        session.add(data)
        session.flush()
        participants.append((org.id, data.id))
    project = Project(name="p", spec={}, spec_hash="1" * 64, proposer="admin")
    session.add(project)
    session.flush()
    run = Run(project_id=project.id)
    session.add(run)
    session.commit()
    return run.id, participants


HUB_START = 2
"""The hub's own first entries (``hub.key``, ``hub.created``)."""


def chain(session: Session) -> list:
    """The whole chain, and the entries the test made."""
    return [ledger.to_chained(e) for e in session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq))]


def made(session: Session) -> list:
    return chain(session)[HUB_START:]


def test_a_round_opens_with_its_tasks_and_ledger_entries(session, run_with_orgs) -> None:
    run_id, participants = run_with_orgs
    opened = run_store.open_phase(
        session, run_id, 1, "fit", "a" * 64, [run_store.NewTask(o, d, seed=o) for o, d in participants],
        NOW + timedelta(seconds=30), events=[("round.opened", "hub", {"round": 1})], scope=SCOPE,
    )
    session.commit()
    tasks = session.scalars(select(Task).where(Task.round_id == opened.round_id).order_by(Task.id)).all()
    assert [t.id for t in tasks] == opened.task_ids
    assert [(t.org_id, t.dataset_id, t.seed, t.status, t.kind) for t in tasks] == [
        (o, d, o, "pending", "fit") for o, d in participants
    ]
    assert [e.event_type for e in made(session)] == ["round.opened"]


def test_task_ids_follow_the_given_order_with_every_column_written(session, run_with_orgs) -> None:
    """Whatever order the participants come in (PostgreSQL inserts them through ``unnest``), each id is its
    own task's, with every column written as the generic insert writes it; a repeated dataset (never the
    case in one phase, but not assumed) takes the generic path."""
    run_id, participants = run_with_orgs
    largest_seed = 2**63 - 1
    given = [run_store.NewTask(o, d, seed=largest_seed - o) for o, d in reversed(participants)]
    deadline = NOW + timedelta(seconds=30)
    opened = run_store.open_phase(session, run_id, 1, "fit", "c" * 64, given, deadline)
    repeated = run_store.open_phase(session, run_id, 2, "evaluate", None, [given[0], given[0]], deadline)
    session.commit()
    rows = {t.id: t for t in session.scalars(select(Task))}
    assert [(rows[i].org_id, rows[i].dataset_id, rows[i].seed) for i in opened.task_ids] == [
        (t.org_id, t.dataset_id, t.seed) for t in given]
    assert [(rows[i].org_id, rows[i].dataset_id) for i in repeated.task_ids] == [(given[0].org_id, given[0].dataset_id)] * 2
    for task_id in opened.task_ids + repeated.task_ids:
        task = rows[task_id]
        assert (task.run_id, task.status, task.claimed_at, task.done_at) == (run_id, "pending", None, None)
        assert task.created_at is not None and task.deadline.replace(tzinfo=UTC) == deadline
    assert {rows[i].params_sha256 for i in opened.task_ids} == {"c" * 64}


def test_reopening_a_round_number_makes_a_new_attempt(session, run_with_orgs) -> None:
    run_id, participants = run_with_orgs
    tasks = [run_store.NewTask(o, d, seed=0) for o, d in participants]
    first = run_store.open_phase(session, run_id, 2, "fit", None, tasks, NOW)
    second = run_store.open_phase(session, run_id, 2, "fit", None, tasks, NOW)
    session.commit()
    attempts = {r.id: r.attempt for r in session.scalars(select(Round))}
    assert (attempts[first.round_id], attempts[second.round_id]) == (1, 2)


def test_tasks_can_join_an_existing_round(session, run_with_orgs) -> None:
    run_id, participants = run_with_orgs
    opened = run_store.open_phase(session, run_id, 1, "fit", None, [], NOW)
    again = run_store.open_phase(session, run_id, 1, "evaluate", "b" * 64,
                                 [run_store.NewTask(*participants[0], seed=3)], NOW, round_id=opened.round_id)
    session.commit()
    assert again.round_id == opened.round_id
    assert session.scalar(select(func.count()).select_from(Round)) == 1


def close_and_open(session: Session, run_id: int, participants, closing: int, number: int) -> int:
    """Round ``number - 1`` closed (with round ``number - 2``'s evaluation) and round ``number`` opened."""
    evaluated = run_store.federated_eval_event(session, run_id, number - 2, {"accuracy": 0.5}, 30, 0.25)
    run_store.close_round(session, run_id, number - 1, closing, metrics={"round": number - 1},
                          params_sha256="d" * 64, server_state_sha256="e" * 64, now=NOW,
                          events=[evaluated, ("round.completed", "hub", {"round": number - 1})], scope=SCOPE)
    return run_store.open_phase(session, run_id, number, "fit", "d" * 64,
                                [run_store.NewTask(o, d, seed=0) for o, d in participants], NOW).round_id


def test_closing_a_round_and_opening_the_next_is_all_or_nothing(session, run_with_orgs) -> None:
    run_id, participants = run_with_orgs
    first = run_store.open_phase(session, run_id, 1, "fit", None, [], NOW)
    run_store.close_round(session, run_id, 1, first.round_id, metrics={"round": 1, "federated_eval": {}},
                          params_sha256="c" * 64, server_state_sha256=None, now=NOW,
                          events=[("round.completed", "hub", {"round": 1})], scope=SCOPE)
    second = run_store.open_phase(session, run_id, 2, "fit", None, [], NOW)
    session.commit()

    close_and_open(session, run_id, participants, second.round_id, 3)
    session.rollback()
    assert session.get(Run, run_id).current_round == 1
    assert session.scalar(select(func.count()).select_from(Round).where(Round.number == 3)) == 0
    assert "federated_eval" not in (session.get(Round, second.round_id).metrics or {})

    third = close_and_open(session, run_id, participants, second.round_id, 3)
    session.commit()
    session.expire_all()
    run = session.get(Run, run_id)
    assert (run.current_round, run.params_sha256, run.server_state_sha256) == (2, "d" * 64, "e" * 64)
    rounds = {r.number: r for r in session.scalars(select(Round))}
    assert rounds[2].status == "closed" and rounds[2].metrics == {"round": 2}
    assert rounds[1].metrics["federated_eval"] == {"accuracy": 0.5}
    assert rounds[1].metrics["max_eval_compute_s"] == 0.25
    assert rounds[3].id == third and rounds[3].status == "open"
    assert session.scalar(select(func.count()).select_from(Task).where(Task.round_id == third)) == 3
    assert [e.event_type for e in made(session)] == ["round.completed", "round.evaluated", "round.completed"]
    assert verify_chain(chain(session)).ok


def test_the_initial_checkpoint_creates_a_closed_round(session, run_with_orgs) -> None:
    run_id, _ = run_with_orgs
    round_id = run_store.close_round(session, run_id, 0, None, metrics=None, params_sha256="f" * 64,
                                     server_state_sha256=None, now=NOW,
                                     events=[("run.initialised", "hub", {})], scope=SCOPE)
    session.commit()
    rnd = session.get(Round, round_id)
    assert (rnd.number, rnd.status, rnd.attempt) == (0, "closed", 1)
    assert session.get(Run, run_id).current_round == 0


def test_evaluation_of_an_unknown_round_records_nothing(session, run_with_orgs) -> None:
    run_id, _ = run_with_orgs
    assert run_store.federated_eval_event(session, run_id, 7, {"accuracy": 1.0}, 1, 0.0) is None


@pytest.mark.parametrize("sizes", [[1], [3], [2, 1, 4]])
def test_ledger_batches_chain_like_single_appends(session, sizes: list[int]) -> None:
    for batch, size in enumerate(sizes):
        ledger.record_many(session, [("test.event", "hub", {"batch": batch, "i": i}) for i in range(size)],
                           scope=ledger.MEMBERS)
        session.commit()
    assert ledger.record_many(session, [], scope=ledger.MEMBERS) == []
    entries = chain(session)
    assert [e.seq for e in entries] == list(range(1, HUB_START + sum(sizes) + 1))
    report = verify_chain(entries)
    assert report.ok and report.checked == HUB_START + sum(sizes)


def test_the_federated_evaluation_of_a_round_the_caller_closed_needs_no_read_back(session, run_with_orgs) -> None:
    run_id, _ = run_with_orgs
    opened = run_store.open_phase(session, run_id, 1, "fit", None, [], NOW)
    run_store.close_round(session, run_id, 1, opened.round_id, metrics={"round": 1}, params_sha256="c" * 64,
                          server_state_sha256=None, now=NOW, events=[], scope=SCOPE)
    closed = run_store.ClosedRound(opened.round_id, {"round": 1})
    reads: list[str] = []
    event.listen(session, "do_orm_execute", lambda state: reads.append(str(state.statement))
                 if state.is_select else None)
    evaluated = run_store.federated_eval_event(session, run_id, 1, {"accuracy": 0.9}, 12, 0.5, closed)
    session.commit()
    assert evaluated is not None and evaluated[0] == "round.evaluated" and reads == []
    session.expire_all()
    assert session.get(Round, opened.round_id).metrics == {
        "round": 1, "federated_eval": {"accuracy": 0.9}, "federated_eval_pending": False,
        "max_eval_compute_s": 0.5,
    }
    assert run_store.federated_eval_event(
        session, run_id, 0, {"accuracy": 0.1}, 1, 0.0, run_store.ClosedRound(opened.round_id, None)
    ) is None


def test_a_failed_run_leaves_no_round_open(session, run_with_orgs) -> None:
    """A run that fails between a round's two transactions has two open rounds: both are abandoned."""
    run_id, participants = run_with_orgs
    tasks = [run_store.NewTask(o, d, seed=o) for o, d in participants]
    for number in (1, 2):
        run_store.open_phase(session, run_id, number, "fit", "a" * 64, tasks, NOW + timedelta(seconds=30))
    session.commit()
    run_store.fail_run(session, run_id, "blob store full", NOW)
    session.commit()
    assert sorted(session.scalars(select(Round.status).where(Round.run_id == run_id))) == ["abandoned", "abandoned"]
    assert set(session.scalars(select(Task.status).where(Task.run_id == run_id))) == {"cancelled"}


def test_a_new_driver_spends_the_uploads_of_closed_and_abandoned_rounds_not_of_open_ones(
        session, run_with_orgs) -> None:
    """A driver killed between a round's checkpoint and deleting its uploads leaves them for the next one;
    an upload another run's open round answered with too (same digest) is kept."""
    run_id, participants = run_with_orgs
    other = Run(project_id=session.get(Run, run_id).project_id)
    session.add(other)
    session.flush()
    tasks = [run_store.NewTask(o, d, seed=o) for o, d in participants]
    closed = run_store.open_phase(session, run_id, 1, "fit", "a" * 64, tasks, NOW)
    run_store.close_round(session, run_id, 1, closed.round_id, metrics={"round": 1}, params_sha256="c" * 64,
                          server_state_sha256=None, now=NOW, events=[], scope=SCOPE)
    open_ = run_store.open_phase(session, run_id, 2, "fit", "c" * 64, tasks, NOW)
    elsewhere = run_store.open_phase(session, other.id, 1, "fit", "a" * 64, tasks[:1], NOW)
    digests = dict(zip(closed.task_ids + open_.task_ids, "123456", strict=True))
    for task_id, digit in digests.items():
        session.get(Task, task_id).update_sha256 = digit * 64
    session.get(Task, elsewhere.task_ids[0]).update_sha256 = "1" * 64
    run_store.abandon_open_rounds(session, run_id, SCOPE)
    session.commit()
    assert sorted(run_store.spent_uploads(session, run_id)) == [d * 64 for d in "23456"]
