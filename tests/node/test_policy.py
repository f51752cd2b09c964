"""The node's vote book and policy: a task runs only for the project version (spec and test set) its org
voted yes to run and whose passed outcome the hub signed with the key the node pinned, whatever the hub
says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consortium.crypto import OrgIdentity
from consortium.governance import statements
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


HUB_KEY = Ed25519PrivateKey.generate()
HUB_PUBLIC = OrgIdentity.from_private_key("hub", HUB_KEY).public_key_b64


def run_content(project_id: int = 4, name: str = SPEC.name, digest: str = spec_hash(SPEC),
                test_set: str | None = A) -> str:
    return statements.content_hash(statements.proposal_content(HUB, "run_project", {
        "project_id": project_id, "project": name, "spec_hash": digest, "test_set_sha256": test_set}))


def outcome(content: str | None = None, status: str = "passed", votes: dict | None = None,
            signer: Ed25519PrivateKey = HUB_KEY, hub_id: str = HUB) -> tuple[dict, str]:
    statement = statements.outcome_statement(
        hub_id=hub_id, proposal_id=9, content_hash=content or run_content(), status=status,
        decided_at="2026-12-01T00:00:00+00:00", votes={"north": "yes"} if votes is None else votes)
    return statement, OrgIdentity.from_private_key("hub", signer).sign(statements.outcome_message(statement))


def checked(org_dir: Path, signed: tuple[dict, str] | None, test_set: str | None = A) -> str | None:
    VoteBook(org_dir).record(4, voted(spec_hash(SPEC), test_set))
    offered = task(test_set)
    if signed is not None:
        offered = offered.model_copy(update={"outcome": signed[0], "outcome_signature": signed[1]})
    return NodePolicy("north", VoteBook(org_dir), {"digits"}, hub_key=lambda: HUB_PUBLIC).refusal(offered)


def test_a_task_with_the_hubs_signed_passed_outcome_runs(tmp_path: Path) -> None:
    assert checked(tmp_path, outcome()) is None
    assert checked(tmp_path, outcome(run_content(test_set=None)), test_set=None) is None


@pytest.mark.parametrize(("signed", "reason"), [
    (None, "the hub sent no signed outcome of the proposal to run project 4"),
    (outcome(signer=Ed25519PrivateKey.generate()),
     "the outcome of project 4 is not signed by the hub key this node pinned"),
    (outcome(run_content(project_id=5)), "the signed outcome is about another project or version"),
    (outcome(run_content(name="other")), "the signed outcome is about another project or version"),
    (outcome(run_content(digest="cc" * 32)), "the signed outcome is about another project or version"),
    (outcome(run_content(test_set=B)), "the signed outcome is about another project or version"),
    (outcome(status="rejected"), "the proposal to run project 4 is rejected, not passed"),
    (outcome(votes={"north": "no", "south": "yes"}), "does not count a yes of organisation north"),
    (outcome(hub_id="ab" * 16), "names hub abab"),
])
def test_a_task_without_a_matching_signed_outcome_is_refused(tmp_path: Path, signed, reason: str) -> None:
    refusal = checked(tmp_path, signed)
    assert refusal is not None and reason in refusal


def test_a_tampered_outcome_is_refused(tmp_path: Path) -> None:
    statement, signature = outcome(run_content(project_id=5))
    statement["content_hash"] = run_content()
    assert "not signed by the hub key" in checked(tmp_path, (statement, signature))
    statement["votes"] = "everyone"
    assert "malformed" in checked(tmp_path, (statement, signature))
