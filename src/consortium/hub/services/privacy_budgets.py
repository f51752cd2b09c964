"""Dataset privacy budgets on the hub: the charges nodes report, what they add up to (composed by the
accountant, :mod:`consortium.fl.privacy.budget`), and the proposal-time check of a project's planned rounds.

The node is the authority on its own budget (:mod:`consortium.node.budget` refuses a round that would pass
it); the hub mirrors each charge as a ``privacy.charged`` ledger entry and refuses, at proposal time, a
project whose planned rounds would pass what a dataset has left: the charges reported so far, composed with
the rounds still to come of the DP projects already approved on it (reserved: a run not started yet reserves
all its rounds, a running one the rounds its node has not charged yet, a finished one none).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.fl.privacy import budget as privacy_budget
from consortium.fl.core import FLError
from consortium.fl.privacy.budget import Budget, Charge
from consortium.hub.db.models import Dataset, PrivacyCharge, Project, ProjectDataset, Run
from consortium.hub.db.open_data_models import OpenDataVersion
from consortium.hub.services.errors import BadRequest
from consortium.plan import RunPlan
from consortium.privacy_wire import PrivacyBudgetSpec
from consortium.protocol import ProjectCreate
from consortium.statuses import RunStatus

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
    """Every charge reported for the dataset: its nodes' training rounds, and its DP synthetic data releases
    (each the Gaussian measurements of its generator, withdrawn ones too: what was released stays spent)."""
    rows = session.execute(select(PrivacyCharge.noise_multiplier, PrivacyCharge.sampling_rate, PrivacyCharge.steps)
                           .where(PrivacyCharge.dataset_id == dataset_id))
    found = [Charge(noise, rate, steps) for noise, rate, steps in rows]
    releases = session.scalars(select(OpenDataVersion.synthetic).where(OpenDataVersion.dataset_id == dataset_id,
                                                                        OpenDataVersion.synthetic.is_not(None)))
    return found + [Charge(float(r["noise_multiplier"]), 1.0, int(r["measurements"])) for r in releases if r]


def round_charge(plan: RunPlan, source: Dataset) -> Charge:
    """What one round of ``plan`` spends on ``source``: DP-FedAvg's release at rate 1, or DP-SGD's local steps
    on the rows its node trains on (from the card's row count)."""
    if plan.sample_level:
        return plan.dp_sgd_plan_of_source(source.rows).round_charge()
    assert plan.privacy is not None
    return Charge(plan.privacy.noise_multiplier, plan.privacy.sampling_rate)


def spent_and_left(session: Session, dataset: Dataset) -> tuple[float | None, float | None]:
    """``(spent, left)`` epsilon of a dataset with a budget, at its delta; ``(None, None)`` without one."""
    budget = budget_of(dataset)
    if budget is None:
        return None, None
    check = privacy_budget.verdict(budget, charges(session, dataset.id), [])
    return check.spent, check.left


def reserved(session: Session, dataset: Dataset) -> tuple[list[Charge], list[str]]:
    """The charges the approved DP projects on the dataset are still to make (see the module), and the names
    of the projects that reserve any."""
    found: list[Charge] = []
    holders = []
    approved = session.scalars(select(Project).join(ProjectDataset, ProjectDataset.project_id == Project.id)
                               .where(ProjectDataset.dataset_id == dataset.id, Project.status == "approved")
                               .order_by(Project.id))
    for project in approved:
        spec = ProjectCreate.model_validate(project.spec)
        if spec.privacy is None:
            continue
        latest = session.scalar(select(Run).where(Run.project_id == project.id).order_by(Run.id.desc()).limit(1))
        to_come = spec.rounds
        if latest is not None and latest.status != RunStatus.running:
            to_come = 0
        elif latest is not None:
            to_come -= session.scalar(select(func.count(func.distinct(PrivacyCharge.round))).where(
                PrivacyCharge.run_id == latest.id, PrivacyCharge.dataset_id == dataset.id)) or 0
        if to_come > 0:
            found += [round_charge(RunPlan.of(spec), dataset)] * to_come
            holders.append(f"{project.name} ({to_come} rounds)")
    return found, holders


def check_proposal(session: Session, spec: ProjectCreate, plan: RunPlan, sources: list[Dataset]) -> None:
    """BadRequest (field ``datasets``) naming each budgeted source the project may not use: any, when the
    project has no DP; else one whose reported charges, the rounds reserved by approved projects and this
    project's planned rounds (every source joins every round, rate 1; under DP-SGD, its local steps) would
    pass its budget. Under DP-SGD, first a BadRequest (``privacy:``) for a source whose rows admit no noise
    multiplier for the target."""
    if plan.sample_level:
        for source in sources:  # each source's own noise multiplier, from its rows (cached for the run's card)
            try:
                plan.dp_sgd_plan_of_source(source.rows)
            except FLError as exc:
                raise BadRequest(f"{exc} ({source.org.name}/{source.name}, {source.rows} rows)") from exc
    problems = []
    for source in sources:
        budget = budget_of(source)
        if budget is None:
            continue
        ref = f"{source.org.name}/{source.name}"
        if not plan.private:
            problems.append(privacy_budget.no_dp_refusal(ref))
            continue
        planned = [round_charge(plan, source)] * spec.rounds
        held, holders = reserved(session, source)
        check = privacy_budget.verdict(budget, charges(session, source.id), planned, held)
        refusal = privacy_budget.plan_refusal(ref, check, holders)
        if refusal is not None:
            problems.append(refusal)
    if problems:
        raise BadRequest("datasets: " + "; ".join(problems))
