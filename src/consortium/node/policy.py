"""The node's own rules: it trains only for project versions its org voted yes to run and that the hub's
signed outcome (checked with the hub key this org pinned) says passed, on data (or in environments) it
registered."""

from __future__ import annotations

import json
from collections.abc import Callable, Container
from dataclasses import asdict, dataclass, field
from pathlib import Path

from consortium.atomic import write_bytes_atomic
from consortium.crypto import canonical_json, sha256_hex, verify_signature
from consortium.governance import statements
from consortium.protocol import ProjectCreate, TaskOut


def spec_hash(spec: ProjectCreate) -> str:
    """SHA-256 of the canonical JSON of a project spec (the same function the hub uses)."""
    return sha256_hex(canonical_json(spec.model_dump(mode="json")))


@dataclass(frozen=True)
class VotedVersion:
    """What the org voted yes to run: the project's spec hash and test set (None: none) on one hub, and the
    proposal (with its content hash) the vote was cast on."""

    spec_hash: str
    test_set_sha256: str | None
    hub_id: str
    proposal_id: int
    content_hash: str


class VoteBook:
    """The org's own record of the project versions it voted yes to run (``votes.json`` in the org
    directory): the node trains only for those, whatever the hub says."""

    def __init__(self, org_dir: Path) -> None:
        self.path = Path(org_dir) / "votes.json"

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text())

    def _write(self, book: dict[str, dict]) -> None:
        write_bytes_atomic(self.path, json.dumps(book, indent=1, sort_keys=True).encode("utf-8"))

    def record(self, project_id: int, version: VotedVersion) -> None:
        book = self._read()
        book[str(project_id)] = asdict(version)
        self._write(book)

    def forget(self, project_id: int) -> None:
        book = self._read()
        if book.pop(str(project_id), None) is not None:
            self._write(book)

    def voted(self, project_id: int) -> VotedVersion | None:
        entry = self._read().get(str(project_id))
        return VotedVersion(**entry) if entry is not None else None


def _digest(value: str | None) -> str:
    return f"{value[:16]}…" if value else "none"


def outcome_refusal(task: TaskOut, hub_key: str, org: str, voted: VotedVersion) -> str | None:
    """Why the task's signed outcome does not show that this project version passed, or None when it does:
    the hub's signature with ``hub_key``, status ``passed``, the content hash of this hub's ``run_project``
    proposal about this project, spec hash and test set, and ``org``'s counted yes."""
    project = task.project_id
    if task.outcome is None or task.outcome_signature is None:
        return f"the hub sent no signed outcome of the proposal to run project {project}"
    try:
        message = statements.outcome_message(task.outcome)
        hub_id, status = task.outcome["hub_id"], task.outcome["status"]
        content = statements.proposal_content(hub_id, "run_project", {
            "project_id": project, "project": task.spec.name, "spec_hash": task.spec_hash,
            "test_set_sha256": task.test_set_sha256})
    except (KeyError, TypeError, ValueError) as exc:
        return f"the hub's outcome statement for project {project} is malformed: {exc}"
    if not verify_signature(hub_key, message, task.outcome_signature):
        return f"the outcome of project {project} is not signed by the hub key this node pinned"
    if hub_id != voted.hub_id:
        return f"the outcome of project {project} names hub {hub_id}, not the hub organisation {org} voted on"
    if task.outcome["content_hash"] != statements.content_hash(content):
        return (f"the signed outcome is about another project or version, not project {project} with spec "
                f"{_digest(task.spec_hash)} and test set {_digest(task.test_set_sha256)}")
    if status != "passed":
        return f"the proposal to run project {project} is {status}, not passed"
    if task.outcome["votes"].get(org) != "yes":
        return f"the signed outcome of project {project} does not count a yes of organisation {org}"
    return None


@dataclass
class NodePolicy:
    """Checks a task before any data is touched; ``refusal`` returns the reason to refuse, or None.

    ``hub_key`` gives the hub key the org pinned (:class:`consortium.node.hub_pin.PinnedHubKey`); with it
    every task must carry the hub's signed outcome that its project version passed (the node process always
    gives it; without it only the org's own vote book is checked). ``local_datasets`` and
    ``local_environments`` may be the org's registries themselves: the node process passes them, so a dataset
    the org registers while the node runs is known at its next task.
    """

    org: str
    votes: VoteBook
    local_datasets: Container[str]
    allowed_algorithms: set[str] | None = None
    notes: list[str] = field(default_factory=list)
    local_environments: Container[str] = field(default_factory=set)
    hub_key: Callable[[], str] | None = None

    def refusal(self, task: TaskOut) -> str | None:
        actual = spec_hash(task.spec)
        if actual != task.spec_hash:
            return "the task's project spec does not hash to the spec hash the hub claims"
        voted = self.votes.voted(task.project_id)
        if voted is None:
            return f"organisation {self.org} has not voted to run project {task.project_id}"
        if voted.spec_hash != actual:
            return f"organisation {self.org} voted for a different version of project {task.project_id}"
        if voted.test_set_sha256 != task.test_set_sha256:
            return (f"organisation {self.org} voted for project {task.project_id} with test set "
                    f"{_digest(voted.test_set_sha256)}, not {_digest(task.test_set_sha256)}")
        if self.hub_key is not None:
            refused = outcome_refusal(task, self.hub_key(), self.org, voted)
            if refused is not None:
                return refused
        if f"{self.org}/{task.dataset}" in task.spec.environments:
            if task.dataset not in self.local_environments:
                return f"environment {task.dataset!r} is not registered on this node"
        elif task.dataset not in self.local_datasets:
            return f"dataset {task.dataset!r} is not registered on this node"
        elif f"{self.org}/{task.dataset}" not in task.spec.datasets:
            return f"dataset {task.dataset!r} is not part of the approved project"
        if self.allowed_algorithms is not None and task.spec.algorithm.name not in self.allowed_algorithms:
            return f"algorithm {task.spec.algorithm.name!r} is not allowed by this node's policy"
        return None
