"""Auditing the ledger without trusting the hub: fetch entries and checkpoints and check them locally.

Entries the hub redacts for this caller (``payload``, ``salt`` and actor signature null) verify through their
payload commitment and the hub's signature; revealed ones are also checked against the commitment and their
actor signature (see :mod:`consortium.ledger.chain`, :mod:`consortium.ledger.signatures`). The Merkle root is
recomputed and compared with every checkpoint the hub serves and every checkpoint given with ``against`` (a
node's ``checkpoints.jsonl``, or one checkpoint's JSON): :func:`consortium.ledger.audit.audit`.

Both paths read the hub's recorded head first, then the checkpoints, then the entries, so entries appended in
between follow the head instead of looking like forgeries, while a cut tail falls short of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from consortium.client import HubClient
from consortium.ledger.audit import AuditReport, Claim, audit
from consortium.ledger.chain import ChainedEntry, ChainHead
from consortium.ledger.checkpoint import Checkpoint

PAGE = 1000


def _claim(item: dict, source: str) -> Claim:
    cosigned = tuple((c["org"], c["key_id"], c["signature"]) for c in item.get("cosignatures", ()))
    return Claim(Checkpoint.from_json(item), source, cosigned)


def load_claims(path: Path) -> list[Claim]:
    """The checkpoints in ``path``: one checkpoint JSON object, or JSON lines each holding a checkpoint or
    ``{"checkpoint": {...}, ...}`` (a node's ``checkpoints.jsonl``). ``ValueError`` naming the bad line."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        return [_claim(json.loads(text), str(path))]
    except ValueError:
        pass
    claims = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            claims.append(_claim(item.get("checkpoint", item) if isinstance(item, dict) else item,
                                 f"{path}:{number}"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}:{number} is not a checkpoint: {exc}") from None
    return claims


def _pages(fetch, key: str) -> Iterator[dict]:
    after = 0
    while True:
        page = fetch(after)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1][key]


def verify_from_hub(client: HubClient, against: list[Claim] | None = None) -> AuditReport:
    """Audit the hub's ledger over its API (paged): chain, signatures, its checkpoints and ``against``."""
    head = client.ledger_head()
    served = [_claim(c, "hub") for c in _pages(lambda a: client.checkpoints(after=a, limit=PAGE), "size")]
    entries = (ChainedEntry(**item) for item in _pages(lambda a: client.ledger(after=a, limit=PAGE), "seq"))
    return audit(entries, ChainHead(head["seq"], head["hash"]), served + list(against or ()))


def verify_from_db(url: str, against: list[Claim] | None = None) -> AuditReport:
    """Audit straight from the hub's database (paged reads)."""
    from consortium.hub.db.session import make_engine, session_factory
    from consortium.hub.services import checkpoints
    from consortium.hub.services.ledger import head, iter_entries, to_chained

    engine = make_engine(url)

    def entries(session) -> Iterator[ChainedEntry]:
        after = 0
        while True:
            page = [to_chained(e) for e in iter_entries(session, after=after, limit=PAGE * 10)]
            yield from page
            if len(page) < PAGE * 10:
                return
            after = page[-1].seq
            session.expunge_all()

    try:
        with session_factory(engine)() as session:
            recorded = head(session)
            rows = checkpoints.with_cosignatures(session, checkpoints.after(session, 0, 10**9))
            served = [Claim(Checkpoint(c.origin, c.size, c.root, c.created_at, c.key_id, c.signature), "hub",
                            tuple((org, kid, sig) for org, kid, sig, _ in cosigned)) for c, cosigned in rows]
            return audit(entries(session), recorded, served + list(against or ()))
    finally:
        engine.dispose()
