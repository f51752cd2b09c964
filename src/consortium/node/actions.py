"""An org's actions on the hub that its node must know of: approving a project.

The CLI (``consortium project approve``) and the scripted consortium (``scenario.approve_as``: demo,
benchmarks, tests) both call :func:`approve_project`, so what a person is shown before signing and what a
script signs are checked the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from consortium.client import HubClient
from consortium.crypto import approval_message
from consortium.node.policy import ApprovalBook, spec_hash
from consortium.protocol import ApprovalIn, ProjectCreate


class ApprovalError(Exception):
    """The hub's account of the project does not add up; nothing was signed."""


@dataclass(frozen=True)
class ApprovalSubject:
    """One version of a project on one hub: what an approval signature covers."""

    hub_id: str
    project_id: int
    project_name: str
    spec_hash: str
    test_set_sha256: str | None

    def message(self) -> bytes:
        return approval_message(hub_id=self.hub_id, project_id=self.project_id, spec_hash=self.spec_hash,
                                test_set_sha256=self.test_set_sha256)


def approval_subject(client: HubClient, project_id: int) -> ApprovalSubject:
    """The project as the hub serves it now, with the spec hash recomputed here and the hub's id."""
    project = client.project(project_id)
    hub_id = client.health().get("hub_id")
    digest = spec_hash(ProjectCreate.model_validate(project["spec"]))
    if digest != project["spec_hash"]:
        raise ApprovalError("the hub's spec hash does not match the spec it sent; not approving")
    if project["id"] != project_id:
        raise ApprovalError(f"asked for project {project_id}, the hub sent project {project['id']}")
    subject = ApprovalSubject(hub_id, project_id, project["name"], digest, project.get("test_set_sha256"))
    if project.get("has_test_set") != (subject.test_set_sha256 is not None):
        raise ApprovalError("the hub says the project has a test set but sent no digest of it, or the "
                            "reverse")
    try:
        subject.message()
    except ValueError as exc:
        raise ApprovalError(f"the hub sent a malformed field: {exc}") from None
    return subject


def approve_project(
    client: HubClient, org_dir: Path, project_id: int,
    confirm: Callable[[ApprovalSubject], bool] | None = None,
) -> ApprovalSubject | None:
    """Read the project and the hub's id, let ``confirm`` see them (None: sign without asking), sign, send,
    and record the approved version in the org's :class:`ApprovalBook` for its node. None when not confirmed.

    Raises :class:`ApprovalError` when the hub's data do not add up, ``HubError`` when the hub refuses.
    """
    if client.identity is None:
        raise ApprovalError("approving needs the organisation's key")
    subject = approval_subject(client, project_id)
    if confirm is not None and not confirm(subject):
        return None
    client.approve(project_id, ApprovalIn(
        spec_hash=subject.spec_hash, test_set_sha256=subject.test_set_sha256, hub_id=subject.hub_id,
        signature=client.identity.sign(subject.message()),
    ))
    ApprovalBook(org_dir).record(project_id, subject.spec_hash, subject.test_set_sha256, subject.hub_id)
    return subject
