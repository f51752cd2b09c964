"""The node's approval book and policy: a task runs only for the project version (spec and test set) its org
signed; the book still reads entries written before it recorded test sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consortium.node.policy import ApprovalBook, ApprovedVersion, NodePolicy, spec_hash
from consortium.protocol import TaskKind, TaskOut
from consortium.scenario import digits_spec

SPEC = digits_spec("policy", ["north"], rounds=1, min_nodes=1)
HUB = "0123456789abcdef" * 2
A, B = "aa" * 32, "bb" * 32


def task(test_set: str | None) -> TaskOut:
    return TaskOut(id=1, kind=TaskKind.fit, run_id=1, round=1, project_id=4, spec_hash=spec_hash(SPEC),
                   spec=SPEC, dataset="digits", params_sha256=None, seed=0, test_set_sha256=test_set)


def policy(org_dir: Path) -> NodePolicy:
    return NodePolicy("north", ApprovalBook(org_dir), {"digits"})


def test_the_book_records_the_version_and_the_hub(tmp_path: Path) -> None:
    book = ApprovalBook(tmp_path)
    assert book.approved(4) is None
    book.record(4, spec_hash(SPEC), A, HUB)
    book.record(5, "cc" * 32)
    assert book.approved(4) == ApprovedVersion(spec_hash(SPEC), A, HUB)
    assert book.approved(5) == ApprovedVersion("cc" * 32, None, None)
    assert json.loads(book.path.read_text())["4"] == {"spec_hash": spec_hash(SPEC), "test_set_sha256": A,
                                                       "hub_id": HUB}


@pytest.mark.parametrize(("approved", "offered", "runs"), [
    (A, A, True), (None, None, True), (A, B, False), (A, None, False), (None, A, False),
])
def test_a_task_runs_only_with_the_approved_test_set(tmp_path: Path, approved, offered, runs: bool) -> None:
    ApprovalBook(tmp_path).record(4, spec_hash(SPEC), approved, HUB)
    reason = policy(tmp_path).refusal(task(offered))
    if runs:
        assert reason is None
    else:
        shown = [f"{digest[:16]}…" if digest else "none" for digest in (approved, offered)]
        assert reason == f"organisation north approved project 4 with test set {shown[0]}, not {shown[1]}"


def test_an_entry_from_before_test_sets_approves_no_version_with_one(tmp_path: Path) -> None:
    (tmp_path / "approvals.json").write_text(json.dumps({"4": spec_hash(SPEC)}))
    assert ApprovalBook(tmp_path).approved(4) == ApprovedVersion(spec_hash(SPEC))
    assert policy(tmp_path).refusal(task(None)) is None
    assert "with test set none, not aaaa" in policy(tmp_path).refusal(task(A))


def test_another_spec_is_still_refused_first(tmp_path: Path) -> None:
    ApprovalBook(tmp_path).record(4, "dd" * 32, A, HUB)
    assert "a different version of project 4" in policy(tmp_path).refusal(task(A))
