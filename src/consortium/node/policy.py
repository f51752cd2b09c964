"""The node's own rules: it trains only for projects its org approved, on data (or in environments) it
registered."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from consortium.atomic import write_bytes_atomic
from consortium.crypto import canonical_json, sha256_hex
from consortium.protocol import ProjectCreate, TaskOut


def spec_hash(spec: ProjectCreate) -> str:
    """SHA-256 of the canonical JSON of a project spec (the same function the hub uses)."""
    return sha256_hex(canonical_json(spec.model_dump(mode="json")))


@dataclass(frozen=True)
class ApprovedVersion:
    """What the org signed for a project: its spec hash, its test set (None: none), and the hub it was for."""

    spec_hash: str
    test_set_sha256: str | None = None
    hub_id: str | None = None
    """None in entries from before approvals named their hub."""


class ApprovalBook:
    """The org's own record of the project versions it approved (``approvals.json`` in the org directory).

    An entry is ``{"spec_hash", "test_set_sha256", "hub_id"}``; an older entry is just the spec hash, which
    covered no test set (so it approves no version that has one).
    """

    def __init__(self, org_dir: Path) -> None:
        self.path = Path(org_dir) / "approvals.json"

    def _read(self) -> dict[str, str | dict]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text())

    def record(self, project_id: int, digest: str, test_set_sha256: str | None = None,
               hub_id: str | None = None) -> None:
        book = self._read()
        book[str(project_id)] = {"spec_hash": digest, "test_set_sha256": test_set_sha256, "hub_id": hub_id}
        write_bytes_atomic(self.path, json.dumps(book, indent=1, sort_keys=True).encode("utf-8"))

    def approved(self, project_id: int) -> ApprovedVersion | None:
        entry = self._read().get(str(project_id))
        if entry is None:
            return None
        if isinstance(entry, str):
            return ApprovedVersion(entry)
        return ApprovedVersion(entry["spec_hash"], entry.get("test_set_sha256"), entry.get("hub_id"))


def _digest(value: str | None) -> str:
    return f"{value[:16]}…" if value else "none"


@dataclass
class NodePolicy:
    """Checks a task before any data is touched; ``refusal`` returns the reason to refuse, or None."""

    org: str
    approvals: ApprovalBook
    local_datasets: set[str]
    allowed_algorithms: set[str] | None = None
    notes: list[str] = field(default_factory=list)
    local_environments: set[str] = field(default_factory=set)

    def refusal(self, task: TaskOut) -> str | None:
        actual = spec_hash(task.spec)
        if actual != task.spec_hash:
            return "the task's project spec does not hash to the spec hash the hub claims"
        approved = self.approvals.approved(task.project_id)
        if approved is None:
            return f"organisation {self.org} has not approved project {task.project_id}"
        if approved.spec_hash != actual:
            return f"organisation {self.org} approved a different version of project {task.project_id}"
        if approved.test_set_sha256 != task.test_set_sha256:
            return (f"organisation {self.org} approved project {task.project_id} with test set "
                    f"{_digest(approved.test_set_sha256)}, not {_digest(task.test_set_sha256)}")
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
