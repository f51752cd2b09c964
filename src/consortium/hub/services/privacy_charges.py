"""A node's report of a round it charged to its dataset's privacy budget: checked against the run's plan and
mirrored as a ``privacy_charges`` row and a ``privacy.charged`` ledger entry (what
:mod:`consortium.hub.services.privacy_budgets` composes into a dataset's spent epsilon)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.hub.db.models import Dataset, PrivacyCharge, Project, Round, Run, Task
from consortium.hub.services import ledger
from consortium.hub.services.errors import BadRequest
from consortium.hub.services.identity import Principal, SignedCall
from consortium.hub.services.privacy_budgets import round_charge, spent_and_left
from consortium.hub.services.runs import own_task
from consortium.plan import RunPlan
from consortium.privacy_wire import PrivacyCharge as PrivacyChargeIn
from consortium.protocol import ProjectCreate, TaskKind

NOISE_MATCH = 1e-9
"""Relative tolerance between a reported noise multiplier and the one the hub resolves from the spec."""


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
    if not plan.private:
        raise BadRequest(f"task {task.id}: project {project.name!r} has no differential privacy to charge")
    expected = round_charge(plan, dataset)
    if abs(body.noise_multiplier - expected.noise_multiplier) > NOISE_MATCH * expected.noise_multiplier:
        raise BadRequest(f"noise_multiplier: {body.noise_multiplier} is not the run's {expected.noise_multiplier}")
    if plan.sample_level and (body.steps, body.sampling_rate) != (expected.steps, expected.sampling_rate):
        raise BadRequest(f"steps: DP-SGD on {dataset.name} takes {expected.steps} steps at rate "
                         f"{expected.sampling_rate:.6g} a round, the node reported {body.steps} at "
                         f"{body.sampling_rate:.6g}")
    if signed is not None:
        signed.record_nonce(session)
    charge = PrivacyCharge(task_id=task.id, dataset_id=dataset.id, run_id=task.run_id, round=round_number,
                           noise_multiplier=body.noise_multiplier, sampling_rate=body.sampling_rate,
                           steps=body.steps)
    session.add(charge)
    session.flush()
    spent, left = spent_and_left(session, dataset)
    ledger.record(
        session, "privacy.charged", actor.label,
        {"dataset": f"{dataset.org.name}/{dataset.name}", "project_id": project.id, "run_id": task.run_id,
         "round": round_number, "task_id": task.id, "noise_multiplier": body.noise_multiplier,
         "sampling_rate": body.sampling_rate, "steps": body.steps, "budget_delta": dataset.privacy_delta,
         "spent_epsilon": spent, "left_epsilon": left},
        scope=ledger.source_scope(dataset.id),
    )
    session.commit()
    return charge
