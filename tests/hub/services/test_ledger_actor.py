"""Signed appends: the hub signs every entry, checks an org's actor signature before recording it, and will
not sign with a key its ledger does not announce."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.crypto import OrgIdentity
from consortium.hub.db.models import LedgerEntry, Org
from consortium.hub.services import hub_identity, ledger
from consortium.hub.services.hub_key import HubKey
from consortium.ledger.audit import audit
from consortium.ledger.signatures import ActorSignature, actor_message


def test_an_org_signed_event_is_recorded_with_its_signature_and_verifies(session: Session) -> None:
    north = OrgIdentity.from_private_key("north", Ed25519PrivateKey.generate())
    session.add(Org(name="north", public_key=north.public_key_b64, key_id=north.key_id))
    ledger.record(session, "node.enrolled", "org:north", {"org": "north", "node": "n", "key_id": north.key_id,
                                                          "public_key": north.public_key_b64},
                  scope=ledger.MEMBERS)
    session.commit()
    payload = {"proposal_id": 1, "vote": "yes"}
    signed = ActorSignature(north.key_id, north.sign(actor_message("vote.cast", payload)))
    entry = ledger.record(session, "vote.cast", "org:north", payload, scope=ledger.project_scope(1),
                          actor_signature=signed)
    session.commit()
    assert (entry.actor_key_id, entry.actor_signature) == (north.key_id, signed.signature)
    count = session.scalar(select(func.count()).select_from(LedgerEntry))
    for bad in (ActorSignature(north.key_id, north.sign(actor_message("vote.cast", {**payload, "vote": "no"}))),
                ActorSignature("0" * 16, signed.signature)):
        with pytest.raises(ValueError):
            ledger.record(session, "vote.cast", "org:north", payload, scope=ledger.project_scope(1),
                          actor_signature=bad)
    assert session.scalar(select(func.count()).select_from(LedgerEntry)) == count
    report = audit(ledger.to_chained(e) for e in ledger.iter_entries(session))
    assert report.ok and report.checked == count, report.reason
    hidden = [ledger.to_chained(e, reveal=e.seq != entry.seq) for e in ledger.iter_entries(session)]
    assert hidden[-1].actor_signature is None and audit(hidden).ok


def test_a_hub_started_with_another_key_refuses_to_sign(session: Session) -> None:
    with pytest.raises(RuntimeError, match="is not the one its ledger announces"):
        hub_identity.start(session.get_bind(), HubKey.generate())
