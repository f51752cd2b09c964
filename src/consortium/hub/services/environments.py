"""Environment cards: the RL counterpart of dataset cards, published by an org whose node plays them.

An environment is stored as a data source of kind "environment" (see
:class:`~consortium.hub.db.models.Dataset`), so projects, tasks, approvals and licences treat it like a
dataset. The hub checks the card: a known gymnasium id, and, when the physics are published, valid physics
that hash to the card's commitment.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.fl.core import FLError
from consortium.fl.environments import (
    LocalEnvironment,
    check_environment,
    default_physics,
    observation_size,
    physics_digest,
)
from consortium.hub.db.models import Dataset
from consortium.hub.services import ledger, licensing
from consortium.hub.services.access import source_rights
from consortium.hub.services.datasets import source_by_ref, sources_listing
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden
from consortium.hub.services.identity import Principal
from consortium.environments_wire import EnvironmentCardIn, EnvironmentCardOut

KIND = "environment"
FILE_FORMAT = "gymnasium"


def check_card(card: EnvironmentCardIn) -> int:
    """BadRequest naming the field that is wrong; the observation size of the environment otherwise."""
    try:
        default_physics(card.env_id)
    except FLError as exc:
        raise BadRequest(f"env_id: {exc}") from exc
    if card.physics is not None:
        try:
            check_environment(LocalEnvironment(card.env_id, card.physics))
        except FLError as exc:
            raise BadRequest(f"physics: {exc}") from exc
        if physics_digest(card.env_id, card.physics, card.physics_salt or "") != card.physics_sha256:
            raise BadRequest("physics_sha256: does not match the published env_id, physics and physics_salt")
    return observation_size(LocalEnvironment(card.env_id))


def observation_schema(size: int) -> dict:
    """The data schema of an environment: one float32 observation of ``size`` numbers, no target."""
    return {"features": [{"name": "observation", "dtype": "float32", "shape": [size]}], "target": None}


def register(session: Session, actor: Principal, card: EnvironmentCardIn) -> Dataset:
    """Publish an environment card for the caller's own org (its key, or one of its stewards), its licence
    checked and stored in its canonical SPDX spelling."""
    if actor.org_id is None or not actor.acts_for(actor.org_id):
        raise Forbidden("only an organisation's node or steward can register its environments")
    size = check_card(card)
    licence = licensing.normalised("license", card.license)
    existing = session.scalar(
        select(Dataset).where(Dataset.org_id == actor.org_id, Dataset.name == card.name)
    )
    if existing is not None:
        what = "an environment" if existing.kind == KIND else "a dataset"
        raise Conflict(f"{actor.org_name}/{card.name} already exists ({what}); pick another name")
    environment = Dataset(
        org_id=actor.org_id,
        name=card.name,
        kind=KIND,
        description=card.description,
        schema=observation_schema(size),
        rows=0,
        sha256=card.physics_sha256,
        license=licence,
        visibility=card.visibility.value,
        file_format=FILE_FORMAT,
        environment={"env_id": card.env_id, "physics": card.physics, "physics_salt": card.physics_salt},
    )
    session.add(environment)
    session.flush()
    ledger.record(
        session,
        "environment.registered",
        actor.label,
        {"environment": f"{actor.org_name}/{card.name}", "env_id": card.env_id,
         "physics_sha256": card.physics_sha256, "physics_private": card.physics is None,
         "license": licence},
        scope=ledger.source_scope(environment.id),
    )
    session.commit()
    return environment


def by_ref(session: Session, actor: Principal | None, ref: str) -> Dataset:
    """The environment 'org/name'; one the caller may not see is reported as missing (404)."""
    return source_by_ref(session, actor, ref, KIND, "environment")


def listing(session: Session, actor: Principal | None) -> list[Dataset]:
    return sources_listing(session, actor, KIND)


def to_out(environment: Dataset) -> EnvironmentCardOut:
    details = environment.environment or {}
    rights = source_rights(environment)
    return EnvironmentCardOut(
        id=environment.id,
        org=environment.org.name,
        name=environment.name,
        description=environment.description,
        env_id=details["env_id"],
        physics=details.get("physics"),
        physics_salt=details.get("physics_salt"),
        physics_sha256=environment.sha256,
        license=environment.license,
        visibility=environment.visibility,
        observation_size=environment.schema["features"][0]["shape"][0],
        created_at=environment.created_at,
        process=rights.process.dump(),
        download=rights.download.dump(),
    )
