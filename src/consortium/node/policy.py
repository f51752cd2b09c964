"""The node's own rules: it trains only for projects its org approved, on data (or in environments) it
registered."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from consortium.crypto import canonical_json, sha256_hex
from consortium.protocol import ProjectCreate, TaskOut


def spec_hash(spec: ProjectCreate) -> str:
    """SHA-256 of the canonical JSON of a project spec (the same function the hub uses)."""
    return sha256_hex(canonical_json(spec.model_dump(mode="json")))


class ApprovalBook:
    """The org's own record of the project specs it approved (``approvals.json`` in the org directory)."""

    def __init__(self, org_dir: Path) -> None:
        self.path = Path(org_dir) / "approvals.json"

    def _read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text())

    def record(self, project_id: int, digest: str) -> None:
        book = self._read()
        book[str(project_id)] = digest
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".approvals-")
        with os.fdopen(fd, "w") as fh:
            json.dump(book, fh, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    def approved_hash(self, project_id: int) -> str | None:
        return self._read().get(str(project_id))


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
        approved = self.approvals.approved_hash(task.project_id)
        if approved is None:
            return f"organisation {self.org} has not approved project {task.project_id}"
        if approved != actual:
            return f"organisation {self.org} approved a different version of project {task.project_id}"
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
