"""The hub's identity: a random id made once and recorded in the ledger (``hub.created``), and its signing key
announced there (``hub.key``).

Approvals are signed over the id, so an org's approval for one hub cannot be replayed to another; checkpoints
name it as their origin. The ledger holds it, not a table: an auditor sees when it was made, and a hub whose
ledger came from before hub ids records one at its next start (which voids older approvals: they did not name
a hub).

The key (:mod:`consortium.hub.services.hub_key`) is announced before the hub signs with it, once: a hub
started with another key refuses to start (rotating the key is not built: its ``hub.key`` entry would have to
be signed by the old key, see :mod:`consortium.ledger.signatures`). The key is announced first: on a new
ledger ``hub.key`` is entry 1 and ``hub.created`` entry 2, so every entry is signed by a key announced at or
before it. A ledger from before signatures gets its ``hub.key`` at the next start, with an ``org.key`` entry
for every org already enrolled (their ``node.enrolled`` entries named no public key), so verifiers find every
org key in the ledger.
"""

from __future__ import annotations

import secrets
import weakref

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from consortium.hub.db.models import LedgerEntry, Org
from consortium.hub.services import hub_key, ledger
from consortium.ledger.signatures import HUB_KEY, hub_key_payload

HUB_CREATED = "hub.created"
ORG_KEY = "org.key"

_known: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def _recorded(session: Session) -> str | None:
    payload = session.scalar(
        select(LedgerEntry.payload).where(LedgerEntry.event_type == HUB_CREATED)
        .order_by(LedgerEntry.seq).limit(1)
    )
    return payload["hub_id"] if payload is not None else None


def announced_keys(session: Session) -> set[str]:
    """Key ids of every hub key the ledger announces."""
    payloads = session.scalars(select(LedgerEntry.payload).where(LedgerEntry.event_type == HUB_KEY))
    return {p["key_id"] for p in payloads if isinstance(p, dict) and "key_id" in p}


def ensure(session: Session) -> str:
    """The hub's id, recorded first when the ledger has none, and the installed hub key announced when the
    ledger does not name it yet (committed). Under the ledger's append lock, so hub processes starting
    together on one database agree on one id."""
    ledger.lock(session)
    hub_id = _recorded(session)
    key = hub_key.of(session)
    known = announced_keys(session)
    if known and key.key_id not in known:
        session.rollback()
        raise RuntimeError(f"this hub's key ({key.key_id}) is not the one its ledger announces "
                           f"({', '.join(sorted(known))}): start it with that key file "
                           "(CONSORTIUM_HUB_KEY_FILE); "
                           "entries signed by another key would break the ledger for every verifier")
    if key.key_id not in known:
        ledger.record(session, HUB_KEY, "hub", hub_key_payload(key.public_key_b64), scope=ledger.MEMBERS)
        if not known:
            orgs = session.execute(
                select(Org.name, Org.public_key).where(Org.public_key.is_not(None)).order_by(Org.id)
            ).all()
            ledger.record_many(session, [
                (ORG_KEY, "hub", {"org": name, **hub_key_payload(public_key)}) for name, public_key in orgs
            ], scope=ledger.MEMBERS)
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


def start(engine: Engine, key: hub_key.HubKey) -> str:
    """Install ``key`` as the signer of ``engine``'s ledger and :func:`ensure` id and key are recorded; the
    hub's id. What a hub (or a test standing in for one) does before it writes anything."""
    previous = hub_key.installed(engine)
    hub_key.install(engine, key)
    try:
        with sessionmaker(engine)() as session:
            return ensure(session)
    except BaseException:
        hub_key.install(engine, previous)
        raise
