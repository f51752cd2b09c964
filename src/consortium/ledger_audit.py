"""Auditing the ledger without trusting the hub: fetch entries and recompute the chain locally.

Entries the hub redacts for this caller (``payload`` and ``salt`` null) verify through their payload commitment;
revealed ones are also checked against it (see :mod:`consortium.ledger.chain`).

Both paths read the hub's recorded head first and then the entries, so an entry appended in between follows
the head instead of looking like a forgery, while a cut tail falls short of it.
"""

from __future__ import annotations

from collections.abc import Iterator

from consortium.client import HubClient
from consortium.ledger.chain import ChainedEntry, ChainHead, VerifyReport, verify_chain

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
    head = client.ledger_head()
    return verify_chain(_from_hub(client), ChainHead(head["seq"], head["hash"]))


def verify_from_db(url: str) -> VerifyReport:
    from consortium.hub.db.session import make_engine, session_factory
    from consortium.hub.services.ledger import head, iter_entries, to_chained

    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            recorded = head(session)
            return verify_chain((to_chained(e) for e in iter_entries(session)), recorded)
    finally:
        engine.dispose()
