"""The node's own rules: it trains only for project versions its org voted yes to run, on data (or in
environments) it registered."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from consortium.atomic import write_bytes_atomic
from consortium.crypto import canonical_json, sha256_hex
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


@dataclass
class NodePolicy:
    """Checks a task before any data is touched; ``refusal`` returns the reason to refuse, or None."""

    org: str
    votes: VoteBook
    local_datasets: set[str]
    allowed_algorithms: set[str] | None = None
    notes: list[str] = field(default_factory=list)
    local_environments: set[str] = field(default_factory=set)

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
