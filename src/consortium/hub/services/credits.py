"""Credit accounts: each earn and spend is a ledger entry, indexed in ``credit_movements`` to sum quickly.

What earns and what costs comes from the policy in force (:mod:`consortium.governance.credits`). Every movement
names its reason and what it refers to (``model:7``, ``run:3``, ``project:12``); one org moves credits at most
once per reason and reference, so an award or a charge written twice (a retried request, a re-settled
proposal) counts once. A spend takes the ledger's append lock before it reads the balance, so concurrent
spends of one org serialise and cannot overdraw.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.governance.credits import (
    EARN_REASONS,
    SPEND_REASONS,
    CreditError,
    CreditReason,
    CreditRules,
    check_amount,
    check_spend,
    compute_awards,
    project_cost,
    release_awards,
)
from consortium.hub.db.models import CreditMovement, Dataset, Model, Org, Project, ProjectDataset, Run, User
from consortium.hub.services import ledger, run_store
from consortium.hub.services import policy as policies
from consortium.hub.services.errors import PaymentRequired

MAX_HISTORY = 1000


def rules(session: Session) -> CreditRules | None:
    """The credit rules of the policy in force; None when the policy predates credits (or, in a database no
    hub has started on, when there is no policy yet)."""
    policy = policies.in_force(session)
    return None if policy is None else policy.credits


def balance(session: Session, org: Org) -> int:
    """The org's balance: the sum of its movements."""
    return int(session.scalar(select(func.coalesce(func.sum(CreditMovement.amount), 0))
                              .where(CreditMovement.org_id == org.id)))


def balances(session: Session) -> dict[str, int]:
    """Every org's balance by name (orgs that never moved credits at 0)."""
    sums = {org_id: total for org_id, total in session.execute(
        select(CreditMovement.org_id, func.sum(CreditMovement.amount)).group_by(CreditMovement.org_id))}
    return {org.name: int(sums.get(org.id, 0)) for org in session.scalars(select(Org).order_by(Org.name))}


def history(session: Session, org: Org, limit: int = 100, before: int | None = None) -> list[CreditMovement]:
    """The org's movements, newest first; ``before`` a ledger seq to page back from."""
    query = select(CreditMovement).where(CreditMovement.org_id == org.id)
    if before is not None:
        query = query.where(CreditMovement.ledger_seq < before)
    return list(session.scalars(query.order_by(CreditMovement.ledger_seq.desc()).limit(min(limit, MAX_HISTORY))))


def _existing(session: Session, org: Org, reason: CreditReason, reference: str) -> CreditMovement | None:
    return session.scalar(select(CreditMovement).where(
        CreditMovement.org_id == org.id, CreditMovement.reason == reason.value,
        CreditMovement.reference == reference))


def _move(session: Session, org: Org, amount: int, reason: CreditReason, reference: str,
          detail: dict[str, Any]) -> CreditMovement:
    event = "credits.earned" if amount > 0 else "credits.spent"
    entry = ledger.record(session, event, "hub",
                          {"org": org.name, "amount": abs(amount), "reason": reason.value, "reference": reference,
                           **detail}, scope=ledger.MEMBERS)
    movement = CreditMovement(org_id=org.id, amount=amount, reason=reason.value, reference=reference,
                              ledger_seq=entry.seq)
    session.add(movement)
    session.flush()
    return movement


def earn(session: Session, org: Org, amount: int, reason: CreditReason, reference: str,
         detail: dict[str, Any] | None = None) -> CreditMovement:
    """Credit ``amount`` to the org (once per reason and reference; the caller commits)."""
    if reason not in EARN_REASONS:
        raise ValueError(f"{reason} is not a reason to earn credits")
    check_amount(amount)
    return _existing(session, org, reason, reference) or _move(session, org, amount, reason, reference, detail or {})


def spend(session: Session, org: Org, amount: int, reason: CreditReason, reference: str,
          detail: dict[str, Any] | None = None) -> CreditMovement:
    """Debit ``amount`` (once per reason and reference), or PaymentRequired naming the cost and the balance
    and writing nothing. Takes the ledger's append lock before reading the balance (the caller commits)."""
    if reason not in SPEND_REASONS:
        raise ValueError(f"{reason} is not a reason to spend credits")
    ledger.lock(session)
    paid = _existing(session, org, reason, reference)
    if paid is not None:
        return paid
    held = balance(session, org)
    try:
        check_spend(held, amount)
    except CreditError as exc:
        raise PaymentRequired(f"{org.name}: {exc} ({reason.value} {reference})", cost=amount, balance=held) from exc
    return _move(session, org, -amount, reason, reference, detail or {})


def charge_project(session: Session, org: Org, project: Project) -> None:
    """Charge a new project to its proposer's org when the org is past its free quota."""
    credit_rules = rules(session)
    if credit_rules is None or credit_rules.project_cost == 0:
        return
    labels = [f"org:{org.name}", *(f"user:{name}" for name in session.scalars(
        select(User.name).where(User.org_id == org.id)))]
    before = session.scalar(select(func.count()).select_from(Project).where(
        Project.proposer.in_(labels), Project.id != project.id))
    cost = project_cost(credit_rules, int(before or 0))
    if cost:
        spend(session, org, cost, CreditReason.project, f"project:{project.id}", {"project": project.name})


def charge_model_download(session: Session, org_id: int, model: Model) -> None:
    """Charge an org whose data did not train ``model`` for its first download of it (the caller commits)."""
    credit_rules = rules(session)
    if credit_rules is None or credit_rules.model_download_cost == 0:
        return
    trained_by = set(session.scalars(select(Dataset.org_id).join(
        ProjectDataset, ProjectDataset.dataset_id == Dataset.id).where(ProjectDataset.project_id == model.project_id)))
    if org_id in trained_by:
        return
    spend(session, session.get(Org, org_id), credit_rules.model_download_cost, CreditReason.model_download,
          f"model:{model.id}", {"model_id": model.id})


def award_run(session: Session, run: Run) -> dict[str, int]:
    """Credit each org for the rounds it trained in a completed run; the awards by org name."""
    credit_rules = rules(session)
    if credit_rules is None:
        return {}
    trained = run_store.rounds_trained(session, run.id)
    awards = compute_awards(credit_rules.per_round_trained, trained)
    for name, amount in sorted(awards.items()):
        org = session.scalar(select(Org).where(Org.name == name))
        earn(session, org, amount, CreditReason.compute, f"run:{run.id}", {"rounds": trained[name]})
    return awards


def award_release(session: Session, model: Model) -> dict[str, int]:
    """Share the policy's release pool among the released model's contributors by their measured
    contribution (the card's ``contributions``: org -> value); nothing when none was measured."""
    credit_rules = rules(session)
    measured = (model.card or {}).get("contributions") or {}
    values = measured.get("values") if isinstance(measured, dict) else None
    if credit_rules is None or not isinstance(values, dict):
        return {}
    awards = release_awards(credit_rules.release_pool, {k: float(v) for k, v in values.items()})
    for name, amount in sorted(awards.items()):
        org = session.scalar(select(Org).where(Org.name == name))
        if org is not None:
            earn(session, org, amount, CreditReason.contribution, f"model:{model.id}",
                 {"model_id": model.id, "contribution": float(values[name])})
    return awards
