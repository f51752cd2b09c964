"""Credit accounts: every org's balance, and one org's movements (members see all: credits are consortium
business, and every movement is a members-scope ledger entry anyway)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.credits_wire import CreditAccountOut, CreditBalanceOut, CreditMovementOut
from consortium.hub.db.models import Org
from consortium.hub.deps import db, principal
from consortium.hub.services import credits
from consortium.hub.services.errors import NotFound
from consortium.hub.services.identity import Principal
from consortium.hub.wire import Name, StrictJSONRoute

router = APIRouter(prefix="/api", tags=["credits"], route_class=StrictJSONRoute)


@router.get("/credits", response_model=list[CreditBalanceOut])
def list_balances(session: Session = Depends(db), caller: Principal = Depends(principal)):
    return [CreditBalanceOut(org=org, balance=amount) for org, amount in credits.balances(session).items()]


@router.get("/credits/{org}", response_model=CreditAccountOut)
def get_account(
    org: Name,
    limit: Annotated[int, Query(ge=1, le=credits.MAX_HISTORY)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    session: Session = Depends(db), caller: Principal = Depends(principal),
):
    row = session.scalar(select(Org).where(Org.name == org))
    if row is None:
        raise NotFound(f"no org {org!r}")
    movements = credits.history(session, row, limit, before)
    return CreditAccountOut(org=row.name, balance=credits.balance(session, row), history=[
        CreditMovementOut(amount=m.amount, reason=m.reason, reference=m.reference, ledger_seq=m.ledger_seq,
                          created_at=m.created_at) for m in movements])
