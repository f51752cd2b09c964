"""Auditing the ledger without trusting the hub: fetch entries and recompute the chain locally.

Entries the hub redacts for this caller (``payload`` and ``salt`` null) verify through their payload commitment;
revealed ones are also checked against it (see :mod:`consortium.ledger.chain`).
"""

from __future__ import annotations

from collections.abc import Iterator

from consortium.client import HubClient
from consortium.ledger.chain import ChainedEntry, VerifyReport, verify_chain

PAGE = 1000


def _from_hub(client: HubClient) -> Iterator[ChainedEntry]:
    after = 0
    while True:
        page = client.ledger(after=after, limit=PAGE)
        for item in page:
            yield ChainedEntry(**item)
        if len(page) < PAGE:
            return
        after = page[-1]["seq"]


def verify_from_hub(client: HubClient) -> VerifyReport:
    return verify_chain(_from_hub(client))


def verify_from_db(url: str) -> VerifyReport:
    from consortium.hub.db.session import make_engine, session_factory
    from consortium.hub.services.ledger import iter_entries, to_chained

    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            return verify_chain(to_chained(e) for e in iter_entries(session))
    finally:
        engine.dispose()
