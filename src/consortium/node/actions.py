"""An org's actions on the hub that its node must know of: registering a dataset or an environment, voting
on a proposal, rotating its key.

The CLI (``consortium dataset add``, ``environment add``, ``vote``) and the scripted consortium
(:mod:`consortium.scenario`: demo, benchmarks, tests) both call these functions, so what a person registers
or signs and what a script does are checked the same way. Each action publishes to the hub first and records
locally after, so a card the hub refuses leaves nothing for the node to serve.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from consortium import crypto
from consortium.client import HubClient, HubError
from consortium.governance import licences, statements
from consortium.governance.wire import VoteIn
from consortium.node.environments import EnvironmentRegistry, RegisteredEnvironment
from consortium.node.policy import VoteBook, VotedVersion, spec_hash
from consortium.node.registry import LocalRegistry, build_card
from consortium.protocol import DatasetCardIn, DatasetSchema, ProjectCreate, Visibility
from consortium.tables import LoadedDataset, load_table


class VoteError(Exception):
    """The hub's account of the proposal does not add up; nothing was signed."""


@dataclass(frozen=True)
class VoteSubject:
    """A proposal as this org checked it before signing: the hub, its content and (for a project) the
    version of the project it is about."""

    hub_id: str
    proposal_id: int
    kind: str
    content_hash: str
    subject: dict
    status: str
    project_name: str | None = None


def vote_subject(client: HubClient, proposal_id: int) -> VoteSubject:
    """The proposal as the hub serves it now, with its content hash recomputed here; for a run_project
    proposal, the project's spec hash recomputed from its spec and its test set compared with the subject's."""
    proposal = client.proposal(proposal_id)
    hub_id = client.health().get("hub_id")
    try:
        content = statements.proposal_content(hub_id, proposal["kind"], proposal["subject"])
    except ValueError as exc:
        raise VoteError(f"the hub sent a malformed proposal: {exc}") from None
    digest = statements.content_hash(content)
    if proposal["id"] != proposal_id:
        raise VoteError(f"asked for proposal {proposal_id}, the hub sent proposal {proposal['id']}")
    if digest != proposal["content_hash"] or proposal["content"] != content:
        raise VoteError("the proposal's content does not hash to the content hash the hub claims "
                        "(or names another hub); not voting")
    name = None
    if proposal["kind"] == "run_project":
        project = client.project(proposal["subject"]["project_id"])
        spec_digest = spec_hash(ProjectCreate.model_validate(project["spec"]))
        if spec_digest != project["spec_hash"] or spec_digest != proposal["subject"]["spec_hash"]:
            raise VoteError("the project's spec does not hash to the spec hash the proposal names; not voting")
        if project.get("test_set_sha256") != proposal["subject"]["test_set_sha256"]:
            raise VoteError("the proposal is about another version of the project (its test set changed); "
                            "vote on the project's current proposal")
        name = project["name"]
    return VoteSubject(hub_id, proposal_id, proposal["kind"], digest, proposal["subject"], proposal["status"],
                       name)


def check_release_subject(client: HubClient, subject: dict) -> None:
    """Before a yes to a release: the model the hub serves must be the one the proposal binds (weights and card
    hashes recomputed here), and the requested licence must agree with the licences its card names
    (:func:`consortium.governance.licences.check_release`, as the hub checked). An org that may not see the
    model (not a participant) votes on the subject alone."""
    try:
        model = client.model(subject["model_id"])
    except HubError as exc:
        if exc.status_code == 404:
            return
        raise
    if model.get("status") == "released":
        raise VoteError(f"model {subject['model_id']} is released already (proposal "
                        f"{model.get('release_proposal_id')}); not voting")
    if crypto.sha256_hex(crypto.canonical_json(model["card"])) != subject["card_sha256"] \
            or model["params_sha256"] != subject["params_sha256"]:
        raise VoteError(f"model {subject['model_id']} is not the one the release proposal binds (its card or "
                        "weights changed); not voting")
    sources = model["card"].get("datasets", []) + model["card"].get("environments", [])
    try:
        conflicts = licences.check_release([(s["ref"], s["license"]) for s in sources], subject["licence"],
                                           subject["commercial"])
    except licences.LicenceError as exc:
        raise VoteError(f"the release proposal's licence cannot be read: {exc}") from None
    if conflicts:
        raise VoteError("the requested licence conflicts with the model's data: "
                        + "; ".join(c.message for c in conflicts) + "; not voting")


def cast_vote(
    client: HubClient, org_dir: Path, proposal_id: int, choice: str, reason: str = "",
    confirm: Callable[[VoteSubject], bool] | None = None,
) -> VoteSubject | None:
    """Read and check the proposal, let ``confirm`` see it (None: sign without asking), sign the vote
    statement with the org's key and send it. A yes to run a project is recorded in the org's
    :class:`VoteBook` for its node (any other choice removes the project from it). None when not confirmed.

    Raises :class:`VoteError` when the hub's data do not add up, ``HubError`` when the hub refuses.
    """
    if client.identity is None:
        raise VoteError("voting needs the organisation's key")
    subject = vote_subject(client, proposal_id)
    if subject.kind == "release_model" and choice == "yes":
        check_release_subject(client, subject.subject)
    if confirm is not None and not confirm(subject):
        return None
    try:
        statement = statements.vote_statement(
            hub_id=subject.hub_id, proposal_id=proposal_id, content_hash=subject.content_hash,
            org=client.identity.org, choice=choice, reason=reason)
    except ValueError as exc:
        raise VoteError(str(exc)) from None
    client.vote(proposal_id, VoteIn(choice=choice, reason=reason, content_hash=subject.content_hash,
                                    signature=client.identity.sign(statements.vote_message(statement))))
    if subject.kind == "run_project":
        _book_run_vote(org_dir, subject, choice)
    return subject


def _book_run_vote(org_dir: Path, subject: VoteSubject, choice: str) -> None:
    book = VoteBook(org_dir)
    project_id = subject.subject["project_id"]
    if choice == "yes":
        book.record(project_id, VotedVersion(
            spec_hash=subject.subject["spec_hash"], test_set_sha256=subject.subject["test_set_sha256"],
            hub_id=subject.hub_id, proposal_id=subject.proposal_id, content_hash=subject.content_hash))
    else:
        book.forget(project_id)


def adopt_vote(client: HubClient, org_dir: Path, proposal_id: int) -> VoteSubject:
    """Record for the node a vote to run a project that a steward cast in the web page: the proposal is
    checked as :func:`cast_vote` checks it, and the org's vote the hub recorded must carry the org's own
    signature (checked here with the org's key) over the statement for that proposal as it stands, so the
    hub cannot make the node train by claiming a vote. Raises :class:`VoteError` otherwise."""
    if client.identity is None:
        raise VoteError("adopting a vote needs the organisation's key")
    subject = vote_subject(client, proposal_id)
    if subject.kind != "run_project":
        raise VoteError(f"proposal {proposal_id} is a {subject.kind} proposal; only a vote to run a project "
                        "is recorded for the node")
    org = client.identity.org
    cast = [v for v in client.proposal(proposal_id)["votes"] if v["org"] == org]
    if not cast:
        raise VoteError(f"organisation {org} has not voted on proposal {proposal_id}")
    vote = cast[-1]
    try:
        statement = statements.vote_statement(
            hub_id=subject.hub_id, proposal_id=proposal_id, content_hash=subject.content_hash, org=org,
            choice=vote["choice"], reason=vote["reason"])
    except ValueError as exc:
        raise VoteError(f"the hub sent a malformed vote: {exc}") from None
    if not crypto.verify_signature(client.identity.public_key_b64, statements.vote_message(statement),
                                   vote["signature"]):
        raise VoteError(f"the vote the hub shows for {org} on proposal {proposal_id} is not signed by the "
                        "organisation's current key; not recording it")
    _book_run_vote(org_dir, subject, vote["choice"])
    return subject


def rotate_org_key(client: HubClient, org_dir: Path) -> crypto.OrgIdentity:
    """Hand the org over to a fresh key: stage it in ``org.key.new``, sign the rotation statement with the
    current key, send it (a request signed by the current key) and, once the hub accepted it, make the new
    key the org's (the old one kept as ``org.key.old``). A running node picks the new key up by itself.

    A refusal (``HubError``) removes the staged key; any other failure (the hub's answer lost) leaves it in
    place, since the hub may hold it now. Returns the new identity.
    """
    current = client.identity
    if current is None:
        raise ValueError("rotating the key needs the organisation's current key")
    hub_id = client.health().get("hub_id")
    new = crypto.stage_new_key(org_dir, current.org)
    try:
        statement = statements.key_rotation_statement(
            hub_id=hub_id, org=current.org, old_key_id=current.key_id, key_id=new.key_id,
            public_key=new.public_key_b64)
        client.rotate_key(current.org, new.public_key_b64,
                          current.sign(statements.key_rotation_message(statement)))
    except (HubError, ValueError):
        crypto.discard_new_key(org_dir)
        raise
    crypto.adopt_new_key(org_dir, new)
    return new


def prepare_dataset(
    file: str | os.PathLike[str], name: str, license: str, target: str | None = None, description: str = "",
    visibility: Visibility | str = "members", declared: DatasetSchema | None = None,
    privacy_budget: tuple[float, float] | None = None, categorical: list[str] | None = None,
    allow_missing: bool = False,
) -> tuple[LoadedDataset, DatasetCardIn]:
    """Read and hash a data file (checked against ``declared`` if given, ``categorical`` feature columns
    declared) and build its card (with the owner's ``(epsilon, delta)`` privacy budget, if given): every check
    that needs no hub, training's own data checks included, so a bad file or field fails before anything is
    sent (``allow_missing``: empty feature cells accepted, for projects that impute them). Raises
    ``DatasetError``."""
    loaded = load_table(file, target, declared, categorical)
    loaded.check_trainable(allow_missing)
    card = build_card(loaded, name=name, license=license, description=description, visibility=visibility,
                      privacy_budget=privacy_budget)
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
