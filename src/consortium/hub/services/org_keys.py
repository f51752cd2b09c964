"""An org's keys over time: rotating to a new key, signed by the old one, and the history of its keys.

A rotation is the org's own statement (:func:`consortium.governance.statements.key_rotation_statement`),
signed by its current key and recorded as the ``org.key_rotated`` ledger entry whose actor signature is that
very signature. The old key is retired (``org_keys.retired_at``): requests signed by it are refused from then
on, while the signatures it made before (votes, ledger entries, cosignatures) keep verifying with it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from consortium import crypto
from consortium.governance import statements
from consortium.hub.db.models import Node, Org, OrgKey
from consortium.hub.services import hub_identity, ledger
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden
from consortium.hub.services.identity import Principal, org_by_name
from consortium.ledger.signatures import ActorSignature


def rotate(session: Session, actor: Principal, org_name: str, public_key: str, signature: str,
           now: datetime) -> tuple[Org, str]:
    """Replace the org's key by ``public_key``, ``signature`` being its current key's over the rotation
    statement; the org and the id of the key it retired (for the caller's key cache to forget). 403 for
    anyone but the org itself (by a signed request), 422 for a malformed key or a signature that does not
    verify, 409 for a key already used. Nothing is written on failure."""
    if actor.kind != "org":
        raise Forbidden("a key rotation is a signed request of the organisation, made with its current key")
    ledger.lock(session)
    org = org_by_name(session, org_name)
    if actor.org_id != org.id:
        raise Forbidden(f"{actor.label} cannot rotate the key of {org.name!r}")
    if org.public_key is None or org.key_id is None:
        raise Conflict(f"organisation {org.name!r} has no key to rotate: enrol its node first")
    try:
        new_key_id = crypto.key_id(public_key)
    except ValueError as exc:
        raise BadRequest(f"public_key: {exc}") from None
    if session.scalar(select(OrgKey.id).where(OrgKey.key_id == new_key_id)) is not None \
            or session.scalar(select(Org.id).where(Org.key_id == new_key_id)) is not None:
        raise Conflict("public_key: this key is or was already registered; rotate to a fresh key")
    statement = statements.key_rotation_statement(
        hub_id=hub_identity.hub_id(session), org=org.name, old_key_id=org.key_id, key_id=new_key_id,
        public_key=public_key)
    if not crypto.verify_signature(org.public_key, statements.key_rotation_message(statement), signature):
        raise BadRequest("signature: not the organisation's current key's signature of this rotation "
                         f"(old key {org.key_id}, new key {new_key_id}, hub {statement['hub_id']})")
    old_key_id = org.key_id
    ledger.record(session, statements.KEY_ROTATION_EVENT, actor.label, statement, scope=ledger.MEMBERS,
                  actor_signature=ActorSignature(old_key_id, signature))
    retired = session.scalar(select(OrgKey).where(OrgKey.key_id == old_key_id))
    if retired is None:  # an org whose key predates the key history
        retired = OrgKey(org_id=org.id, key_id=old_key_id, public_key=org.public_key,
                         created_at=org.created_at)
        session.add(retired)
    retired.retired_at = now
    session.add(OrgKey(org_id=org.id, key_id=new_key_id, public_key=public_key, created_at=now,
                       rotation_signature=signature))
    org.public_key, org.key_id = public_key, new_key_id
    session.execute(update(Node).where(Node.org_id == org.id).values(key_id=new_key_id)
                    .execution_options(synchronize_session=False))
    session.commit()
    return org, old_key_id


def history(session: Session, org: Org) -> list[OrgKey]:
    """Every key the org has held, oldest first."""
    return list(session.scalars(select(OrgKey).where(OrgKey.org_id == org.id).order_by(OrgKey.id)))
