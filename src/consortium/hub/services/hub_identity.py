"""The hub's identity: a random id made once and recorded in the ledger (``hub.created``).

Approvals are signed over it, so an org's approval for one hub cannot be replayed to another. The ledger holds
it, not a table: an auditor sees when it was made, and a hub whose ledger came from before hub ids records one
at its next start (which voids older approvals: they did not name a hub).
"""

from __future__ import annotations

import secrets
import weakref

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from consortium.hub.db.models import LedgerEntry
from consortium.hub.services import ledger

HUB_CREATED = "hub.created"

_known: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def _recorded(session: Session) -> str | None:
    payload = session.scalar(
        select(LedgerEntry.payload).where(LedgerEntry.event_type == HUB_CREATED)
        .order_by(LedgerEntry.seq).limit(1)
    )
    return payload["hub_id"] if payload is not None else None


def ensure(session: Session) -> str:
    """The hub's id, recorded first when the ledger has none (committed). Under the ledger's append lock, so
    hub processes starting together on one database agree on one id."""
    ledger.lock(session)
    hub_id = _recorded(session)
    if hub_id is None:
        hub_id = secrets.token_hex(16)
        ledger.record(session, HUB_CREATED, "hub", {"hub_id": hub_id}, scope=ledger.MEMBERS)
    session.commit()
    _known[session.get_bind()] = hub_id
    return hub_id


def hub_id(session: Session) -> str:
    """The hub's id (read from the ledger once per engine)."""
    engine = session.get_bind()
    known = _known.get(engine)
    if known is None:
        known = _recorded(session)
        if known is None:
            raise RuntimeError("the hub has no id yet: hub_identity.ensure runs when the hub starts")
        _known[engine] = known
    return known
