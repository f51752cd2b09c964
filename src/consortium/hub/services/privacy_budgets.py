"""Dataset privacy budgets on the hub: the charges nodes report, what they add up to (composed by the
accountant, :mod:`consortium.fl.privacy.budget`), and the proposal-time check of a project's planned rounds.

The node is the authority on its own budget (:mod:`consortium.node.budget` refuses a round that would pass
it); the hub mirrors each charge as a ``privacy.charged`` ledger entry and refuses, at proposal time, a
project whose planned rounds would pass what a dataset has left by the charges reported so far.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.fl.privacy import budget as privacy_budget
from consortium.fl.privacy.budget import Budget, Charge
from consortium.hub.db.models import Dataset, PrivacyCharge, Project, Round, Run, Task
from consortium.hub.services import ledger
from consortium.hub.services.errors import BadRequest
from consortium.hub.services.identity import Principal, SignedCall
from consortium.hub.services.runs import own_task
from consortium.plan import RunPlan
from consortium.privacy_wire import PrivacyBudgetSpec
from consortium.privacy_wire import PrivacyCharge as PrivacyChargeIn
from consortium.protocol import ProjectCreate, TaskKind

NOISE_MATCH = 1e-9
"""Relative tolerance between a reported noise multiplier and the one the hub resolves from the spec."""


def budget_of(dataset: Dataset) -> Budget | None:
    """The owner's budget of ``dataset`` (None: it has none)."""
    if dataset.privacy_epsilon is None or dataset.privacy_delta is None:
        return None
    return Budget(dataset.privacy_epsilon, dataset.privacy_delta)


def store_budget(dataset: Dataset, spec: PrivacyBudgetSpec | None) -> None:
    """Put a card's budget on the dataset row."""
    dataset.privacy_epsilon = spec.epsilon if spec is not None else None
    dataset.privacy_delta = spec.delta if spec is not None else None


def charges(session: Session, dataset_id: int) -> list[Charge]:
    """Every charge reported for the dataset."""
    rows = session.execute(select(PrivacyCharge.noise_multiplier, PrivacyCharge.sampling_rate)
                           .where(PrivacyCharge.dataset_id == dataset_id))
    return [Charge(noise, rate) for noise, rate in rows]


def spent_and_left(session: Session, dataset: Dataset) -> tuple[float | None, float | None]:
    """``(spent, left)`` epsilon of a dataset with a budget, at its delta; ``(None, None)`` without one."""
    budget = budget_of(dataset)
    if budget is None:
        return None, None
    check = privacy_budget.verdict(budget, charges(session, dataset.id), [])
    return check.spent, check.left


def check_proposal(session: Session, spec: ProjectCreate, plan: RunPlan, sources: list[Dataset]) -> None:
    """BadRequest (field ``datasets``) naming each budgeted source the project may not use: any, when the
    project has no DP; else one whose reported charges plus this project's planned rounds (every source joins
    every round, rate 1) would pass its budget."""
    problems = []
    for source in sources:
        budget = budget_of(source)
        if budget is None:
            continue
        ref = f"{source.org.name}/{source.name}"
        if plan.privacy is None:
            problems.append(privacy_budget.no_dp_refusal(ref))
            continue
        planned = [Charge(plan.privacy.noise_multiplier, plan.privacy.sampling_rate)] * spec.rounds
        refusal = privacy_budget.plan_refusal(ref, privacy_budget.verdict(budget, charges(session, source.id),
                                                                          planned))
        if refusal is not None:
            problems.append(refusal)
    if problems:
        raise BadRequest("datasets: " + "; ".join(problems))


def record_charge(
    session: Session, actor: Principal, task_id: int, body: PrivacyChargeIn, signed: SignedCall | None = None,
) -> PrivacyCharge:
    """Mirror a node's charge for one of its fit tasks: a ``privacy_charges`` row and a ``privacy.charged``
    ledger entry in the dataset's scope. A charge already reported for the same dataset, run and round (this
    task again, or a replayed attempt of its round, whose task has the same seed) is returned as it was."""
    task = own_task(session, actor, task_id)
    round_number = session.scalar(select(Round.number).join(Task, Task.round_id == Round.id)
                                  .where(Task.id == task.id))
    existing = session.scalar(select(PrivacyCharge).where(
        PrivacyCharge.dataset_id == task.dataset_id, PrivacyCharge.run_id == task.run_id,
        PrivacyCharge.round == round_number))
    if existing is not None:
        return existing
    if task.kind != TaskKind.fit.value:
        raise BadRequest(f"task {task.id} is a {task.kind} task; only fit tasks spend a privacy budget")
    dataset = session.get(Dataset, task.dataset_id)
    project = session.scalar(select(Project).join(Run, Run.project_id == Project.id).where(Run.id == task.run_id))
    spec = ProjectCreate.model_validate(project.spec)
    plan = RunPlan.of(spec)
    if plan.privacy is None:
        raise BadRequest(f"task {task.id}: project {project.name!r} has no differential privacy to charge")
    expected = plan.privacy.noise_multiplier
    if abs(body.noise_multiplier - expected) > NOISE_MATCH * expected:
        raise BadRequest(f"noise_multiplier: {body.noise_multiplier} is not the run's {expected}")
    if signed is not None:
        signed.record_nonce(session)
    charge = PrivacyCharge(task_id=task.id, dataset_id=dataset.id, run_id=task.run_id, round=round_number,
                           noise_multiplier=body.noise_multiplier, sampling_rate=body.sampling_rate)
    session.add(charge)
    session.flush()
    spent, left = spent_and_left(session, dataset)
    ledger.record(
        session, "privacy.charged", actor.label,
        {"dataset": f"{dataset.org.name}/{dataset.name}", "project_id": project.id, "run_id": task.run_id,
         "round": round_number, "task_id": task.id, "noise_multiplier": body.noise_multiplier,
         "sampling_rate": body.sampling_rate, "budget_delta": dataset.privacy_delta,
         "spent_epsilon": spent, "left_epsilon": left},
        scope=ledger.source_scope(dataset.id),
    )
    session.commit()
    return charge
