"""An org's actions on the hub that its node must know of: registering a dataset or an environment, approving
a project.

The CLI (``consortium dataset add``, ``environment add``, ``project approve``) and the scripted consortium
(:mod:`consortium.scenario`: demo, benchmarks, tests) both call these functions, so what a person registers
or signs and what a script does are checked the same way. Each action publishes to the hub first and records
locally after, so a card the hub refuses leaves nothing for the node to serve.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from consortium.client import HubClient
from consortium.crypto import approval_message
from consortium.node.environments import EnvironmentRegistry, RegisteredEnvironment
from consortium.node.policy import ApprovalBook, spec_hash
from consortium.node.registry import LocalRegistry, build_card
from consortium.protocol import ApprovalIn, DatasetCardIn, DatasetSchema, ProjectCreate, Visibility
from consortium.tables import LoadedDataset, load_table


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


def prepare_dataset(
    file: str | os.PathLike[str], name: str, license: str, target: str | None = None, description: str = "",
    visibility: Visibility | str = "members", declared: DatasetSchema | None = None,
) -> tuple[LoadedDataset, DatasetCardIn]:
    """Read and hash a data file (checked against ``declared`` if given) and build its card: every check
    that needs no hub, so a bad file or field fails before anything is sent. Raises ``DatasetError``."""
    loaded = load_table(file, target, declared)
    card = build_card(loaded, name=name, license=license, description=description, visibility=visibility)
    return loaded, card


def register_dataset(client: HubClient, org_dir: Path, loaded: LoadedDataset, card: DatasetCardIn) -> dict:
    """Publish a dataset's card, then record its file in the org's registry for the node; the hub's answer."""
    out = client.register_dataset(card)
    target = loaded.schema.target.name if loaded.schema.target is not None else None
    LocalRegistry(org_dir).add(card.name, loaded.path, target, card)
    return out


def register_environment(client: HubClient, org_dir: Path, entry: RegisteredEnvironment) -> dict:
    """Publish an environment's card (``prepare_environment`` checked its physics), then record the physics
    and salt in the org's registry for the node; the hub's answer."""
    out = client.register_environment(entry.card)
    EnvironmentRegistry(org_dir).add(entry)
    return out
