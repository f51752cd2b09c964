"""Each org's measured contribution to a run, summed from its ``round.valued`` ledger entries (written by the
hub's valuer, :mod:`consortium.hub.valuation`): what the model card and the run's progress show."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.hub.db.models import LedgerEntry

VALUED, NOT_VALUED = "round.valued", "round.not_valued"


def _org_of(source: str) -> str:
    return source.split("/", 1)[0]


def run_contributions(session: Session, project_id: int, run_id: int, participation: dict[str, int] | None = None,
                      ) -> dict[str, Any]:
    """The card's ``contributions``: each org's values summed over the run's valued rounds, with the rounds
    that could not be valued and why. ``participation`` (org -> rounds trained) values a run whose updates the
    hub could not see (secure aggregation)."""
    if participation is not None:
        return {"method": "participation", "values": {org: float(n) for org, n in sorted(participation.items())},
                "note": "secure aggregation hid each org's update from the hub: orgs are valued by the rounds "
                        "they trained, not by what their updates did"}
    entries = session.scalars(select(LedgerEntry).where(
        LedgerEntry.project_id == project_id, LedgerEntry.event_type.in_([VALUED, NOT_VALUED]))
        .order_by(LedgerEntry.seq))
    totals: dict[str, float] = {}
    valued, not_valued, method, metric = [], [], None, None
    for entry in entries:
        payload = entry.payload
        if payload.get("run_id") != run_id:
            continue
        if entry.event_type == NOT_VALUED:
            not_valued.append({"round": payload["round"], "reason": payload["reason"]})
            continue
        valued.append(payload["round"])
        method, metric = payload["method"], payload["metric"]
        for source, value in payload["values"].items():
            totals[_org_of(source)] = totals.get(_org_of(source), 0.0) + value
    return {"method": method, "metric": metric, "values": dict(sorted(totals.items())),
            "rounds_valued": valued, "rounds_not_valued": not_valued}
