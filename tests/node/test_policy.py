"""The node's vote book and policy: a task runs only for the project version (spec and test set) its org
voted yes to run, whatever the hub says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consortium.node.policy import NodePolicy, VoteBook, VotedVersion, spec_hash
from consortium.protocol import TaskKind, TaskOut
from consortium.scenario import digits_spec

SPEC = digits_spec("policy", ["north"], rounds=1, min_nodes=1)
HUB = "0123456789abcdef" * 2
A, B = "aa" * 32, "bb" * 32


def task(test_set: str | None) -> TaskOut:
    return TaskOut(id=1, kind=TaskKind.fit, run_id=1, round=1, project_id=4, spec_hash=spec_hash(SPEC),
                   spec=SPEC, dataset="digits", params_sha256=None, seed=0, test_set_sha256=test_set)


def voted(spec_digest: str, test_set: str | None) -> VotedVersion:
    return VotedVersion(spec_hash=spec_digest, test_set_sha256=test_set, hub_id=HUB, proposal_id=9,
                        content_hash="ee" * 32)


def policy(org_dir: Path) -> NodePolicy:
    return NodePolicy("north", VoteBook(org_dir), {"digits"})


def test_the_book_records_the_version_the_hub_and_the_proposal(tmp_path: Path) -> None:
    book = VoteBook(tmp_path)
    assert book.voted(4) is None
    book.record(4, voted(spec_hash(SPEC), A))
    book.record(5, voted("cc" * 32, None))
    assert book.voted(4) == voted(spec_hash(SPEC), A) and book.voted(5) == voted("cc" * 32, None)
    assert json.loads(book.path.read_text())["4"] == {
        "spec_hash": spec_hash(SPEC), "test_set_sha256": A, "hub_id": HUB, "proposal_id": 9,
        "content_hash": "ee" * 32}
    book.forget(4)
    assert book.voted(4) is None and book.voted(5) is not None
    book.forget(4)


@pytest.mark.parametrize(("approved", "offered", "runs"), [
    (A, A, True), (None, None, True), (A, B, False), (A, None, False), (None, A, False),
])
def test_a_task_runs_only_with_the_test_set_voted_for(tmp_path: Path, approved, offered, runs: bool) -> None:
    VoteBook(tmp_path).record(4, voted(spec_hash(SPEC), approved))
    reason = policy(tmp_path).refusal(task(offered))
    if runs:
        assert reason is None
    else:
        shown = [f"{digest[:16]}…" if digest else "none" for digest in (approved, offered)]
        assert reason == f"organisation north voted for project 4 with test set {shown[0]}, not {shown[1]}"


def test_a_project_without_a_yes_is_refused(tmp_path: Path) -> None:
    assert policy(tmp_path).refusal(task(None)) == "organisation north has not voted to run project 4"


def test_another_spec_is_still_refused_first(tmp_path: Path) -> None:
    VoteBook(tmp_path).record(4, voted("dd" * 32, A))
    assert "a different version of project 4" in policy(tmp_path).refusal(task(A))
