"""The ledger explorer: entries newest first (filtered by event type, actor, project and date), one entry
with its chain neighbours and Merkle inclusion proof, the signed checkpoints and who cosigned them, and the
JSON the page's own verifier (``static/ledger.js``) re-checks in the browser.

What the API hides, the pages hide: payloads, salts and actor signatures come through the same
:func:`consortium.hub.services.access.ledger_reader` as ``GET /api/ledger``, so an entry outside the
caller's audience is shown redacted (and still verifies); filtering by a project the caller may not see is
refused like a missing project, so the filter cannot tell which entries belong to it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import Select, select
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse, Response

from consortium.hub.db.models import LedgerCheckpoint, LedgerEntry
from consortium.hub.deps import db
from consortium.hub.gate import web
from consortium.hub.services import checkpoints, hub_identity, ledger
from consortium.hub.services import projects as project_service
from consortium.hub.services.access import ledger_reader
from consortium.hub.services.errors import NotFound, ServiceError
from consortium.hub.web.render import WebRoute, caller, error_page, login_redirect, page, secure_headers
from consortium.hub.wire import AfterSeq, Id

router = APIRouter(route_class=WebRoute, include_in_schema=False)
PAGE = 50
FEED_MAX = 5000
FIELD_CHARS = 100
_NAME = re.compile(r"^[A-Za-z0-9_.:\-]*$")


@dataclass(frozen=True)
class LedgerFilters:
    """The explorer's filters as typed (empty: no filter) and the problem with each, by field name."""

    event_type: str = ""
    actor: str = ""
    project: str = ""
    since: str = ""
    until: str = ""

    def problems(self) -> dict[str, str]:
        found = {}
        for name in ("event_type", "actor"):
            value = getattr(self, name)
            if len(value) > FIELD_CHARS or not _NAME.match(value):
                found[name] = f"at most {FIELD_CHARS} letters, digits and . _ : -"
        if self.project and not (self.project.isdigit() and 1 <= int(self.project) <= 2**31 - 1):
            found["project"] = "a project id (a positive whole number)"
        for name in ("since", "until"):
            value = getattr(self, name)
            if value:
                try:
                    date.fromisoformat(value)
                except ValueError:
                    found[name] = "a date as YYYY-MM-DD"
        if not found and self.since and self.until and self.since > self.until:
            found["until"] = "must not be before the first day"
        return found

    def query(self) -> Select:
        """Entries matching the filters, newest first (the filters must be free of problems)."""
        query = select(LedgerEntry).order_by(LedgerEntry.seq.desc())
        if self.event_type:
            query = query.where(LedgerEntry.event_type == self.event_type)
        if self.actor:
            query = query.where(LedgerEntry.actor == self.actor)
        if self.project:
            query = query.where(LedgerEntry.project_id == int(self.project))
        if self.since:
            query = query.where(LedgerEntry.created_at >= self.since)
        if self.until:
            next_day = date.fromisoformat(self.until) + timedelta(days=1)
            query = query.where(LedgerEntry.created_at < next_day.isoformat())
        return query

    def link(self, before: int) -> str:
        """The address of the next (older) page with the same filters."""
        fields = {k: v for k, v in asdict(self).items() if v}
        return "/ledger?" + urlencode({**fields, "before": before})


def _clip(value: str | None) -> str:
    return (value or "").strip()[:FIELD_CHARS + 1]


def shown(session: Session, who, rows: list[LedgerEntry]) -> list[dict]:
    """The entries as the API gives them to ``who``: redacted outside their audience."""
    readable = ledger_reader(session, who, rows)
    return [asdict(ledger.to_chained(e, reveal=readable(e))) for e in rows]


@router.get("/ledger")
@web
def explorer(request: Request, event_type: str | None = None, actor: str | None = None,
             project: str | None = None, since: str | None = None, until: str | None = None,
             before: AfterSeq = 0, session: Session = Depends(db)) -> Response:
    who = caller(request)
    if who is None:
        return login_redirect(request)
    filters = LedgerFilters(_clip(event_type), _clip(actor), _clip(project), _clip(since), _clip(until))
    problems = filters.problems()
    if filters.project and not problems:
        try:
            project_service.get(session, who, int(filters.project))
        except NotFound as exc:
            problems["project"] = exc.message
    entries, older = [], None
    if not problems:
        query = filters.query()
        if before:
            query = query.where(LedgerEntry.seq < before)
        rows = list(session.scalars(query.limit(PAGE + 1)))
        entries = shown(session, who, rows[:PAGE])
        older = filters.link(rows[PAGE - 1].seq) if len(rows) > PAGE else None
    head = ledger.head(session)
    types = sorted(session.scalars(select(LedgerEntry.event_type).distinct()))
    return page(request, "ledger.html", status_code=422 if problems else 200, title="Ledger",
                filters=filters, problems=problems, entries=entries, older=older, head=head, types=types)


def _checkpoint_rows(session: Session, rows: list[LedgerCheckpoint]) -> list[dict]:
    return [{"origin": c.origin, "size": c.size, "root": c.root, "created_at": c.created_at,
             "key_id": c.key_id, "signature": c.signature,
             "cosignatures": [{"org": org, "key_id": kid, "signature": sig, "created_at": at.isoformat()}
                              for org, kid, sig, at in cosigned]}
            for c, cosigned in checkpoints.with_cosignatures(session, rows)]


@router.get("/ledger/checkpoints")
@web
def checkpoint_page(request: Request, session: Session = Depends(db)) -> Response:
    if caller(request) is None:
        return login_redirect(request)
    rows = list(session.scalars(select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()).limit(200)))
    return page(request, "ledger_checkpoints.html", title="Ledger checkpoints",
                checkpoints=_checkpoint_rows(session, rows))


def _json(body: object) -> Response:
    """JSON as the API writes it (Python's number forms kept, so the page can hash payloads exactly)."""
    text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    response = Response(text, media_type="application/json")
    secure_headers(response)
    return response


@router.get("/ledger/feed.json")
@web
def feed(request: Request, after: AfterSeq = 0, limit: int = Query(1000, ge=1, le=FEED_MAX),
         session: Session = Depends(db)) -> Response:
    """Entries after ``after`` in seq order, as ``GET /api/ledger`` gives them to the caller."""
    who = caller(request)
    if who is None:
        return JSONResponse({"detail": "log in first"}, status_code=401)
    return _json(shown(session, who, list(ledger.iter_entries(session, after=after, limit=limit))))


@router.get("/ledger/state.json")
@web
def state(request: Request, session: Session = Depends(db)) -> Response:
    """What the verifier starts from: the hub's recorded head (read first) and every checkpoint with its
    cosignatures."""
    if caller(request) is None:
        return JSONResponse({"detail": "log in first"}, status_code=401)
    head = ledger.head(session)
    rows = list(session.scalars(select(LedgerCheckpoint).order_by(LedgerCheckpoint.size)))
    return _json({"head": {"seq": head.seq, "hash": head.hash},
                  "checkpoints": _checkpoint_rows(session, rows)})


@router.get("/ledger/{seq}")
@web
def entry_page(request: Request, seq: Id, session: Session = Depends(db)) -> Response:
    who = caller(request)
    if who is None:
        return login_redirect(request)
    row = session.get(LedgerEntry, seq)
    if row is None:
        return error_page(request, 404, f"no ledger entry {seq}")
    entry = shown(session, who, [row])[0]
    proof, proof_problem = None, None
    try:
        size, digest, path = checkpoints.inclusion_proof(session, seq, None)
        checkpoint = session.get(LedgerCheckpoint, size)
        proof = {"size": size, "entry_hash": digest, "path": path, "root": checkpoint.root,
                 "checkpoint": _checkpoint_rows(session, [checkpoint])[0]}
    except ServiceError as exc:
        proof_problem = exc.message
    last = ledger.head(session).seq
    return page(request, "ledger_entry.html", title=f"Ledger entry {seq}", entry=entry, proof=proof,
                proof_problem=proof_problem, previous=seq - 1 if seq > 1 else None,
                following=seq + 1 if seq < last else None, hub_id=hub_identity.hub_id(session),
                payload=json.dumps(entry["payload"], indent=2, ensure_ascii=False, sort_keys=True)
                if entry["payload"] is not None else None)
