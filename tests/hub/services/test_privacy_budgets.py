"""Dataset privacy budgets on the hub, on SQLite and PostgreSQL: the card carries the budget and shows what
the node's mirrored charges compose to; a proposal whose planned rounds would pass what is left, or that has no
DP, is refused with the numbers; charges are mirrored once per dataset, run and round, as ledger entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.crypto import generate_org_key
from consortium.fl.privacy.budget import Budget, Charge, epsilon_of, plan_refusal, verdict
from consortium.hub.db.models import LedgerEntry, Org, PrivacyCharge, Round, Run, Task
from consortium.hub.services import datasets as dataset_service
from consortium.hub.services import model_cards
from consortium.hub.services import policy
from consortium.hub.services import projects as project_service
from consortium.hub.services.errors import BadRequest, NotFound
from consortium.hub.services.identity import Principal
from consortium.hub.services.privacy_charges import record_charge
from consortium.plan import RunPlan
from consortium.privacy_wire import PrivacyCharge as ChargeIn
from consortium.protocol import DatasetCardIn, ProjectCreate, Role

SIGMA, DELTA = 3.5, 1e-5
PRIVACY = {"noise": "local", "clip": 1.0, "epsilon": 8.0, "delta": DELTA, "noise_multiplier": SIGMA}


def add_org(session: Session, tmp_path: Path, name: str) -> Principal:
    key = generate_org_key(tmp_path / name, name)
    org = Org(name=name, public_key=key.public_key_b64, key_id=key.key_id, status="admitted")
    session.add(org)
    session.flush()
    return Principal("org", name, Role.steward, org.id, name)


def card(name: str, budget: dict | None) -> DatasetCardIn:
    return DatasetCardIn.model_validate({
        "name": name, "schema": {"features": [{"name": "x", "dtype": "float32", "shape": [4]}],
                                 "target": {"name": "y", "dtype": "int64"}},
        "rows": 50, "sha256": "0" * 64, "license": "CC0-1.0"} | ({"privacy_budget": budget} if budget else {}))


def spec(name: str, rounds: int, privacy: dict | None = PRIVACY) -> ProjectCreate:
    return ProjectCreate.model_validate({
        "name": name, "algorithm": {"name": "classifier", "hyperparameters": {"layers": [4, 8, 3]}},
        "datasets": ["north/budgeted", "south/open"], "rounds": rounds, "min_nodes": 1,
    } | ({"privacy": privacy} if privacy else {}))


@pytest.fixture
def hub(session: Session, tmp_path: Path) -> dict[str, Principal]:
    policy.ensure(session)
    north, south = add_org(session, tmp_path, "north"), add_org(session, tmp_path, "south")
    session.commit()
    dataset_service.register(session, north, card("budgeted", {"epsilon": 2.0, "delta": DELTA}))
    dataset_service.register(session, south, card("open", None))
    return {"north": north, "south": south}


def fit_task(session: Session, run: Run, round_number: int, org: Principal, dataset: str) -> Task:
    row = session.scalar(select(Round).where(Round.run_id == run.id, Round.number == round_number))
    if row is None:
        row = Round(run_id=run.id, number=round_number)
        session.add(row)
        session.flush()
    source = dataset_service.by_ref(session, org, f"{org.org_name}/{dataset}")
    task = Task(run_id=run.id, round_id=row.id, org_id=org.org_id, dataset_id=source.id, kind="fit",
                seed=round_number, deadline=datetime.now(UTC) + timedelta(minutes=5))
    session.add(task)
    session.commit()
    return task


def test_the_card_carries_the_budget_and_what_is_left(session: Session, hub) -> None:
    out = dataset_service.to_out(dataset_service.by_ref(session, hub["north"], "north/budgeted"))
    assert out.privacy_budget is not None and (out.privacy_budget.epsilon, out.privacy_budget.delta) == (2.0, DELTA)
    assert (out.privacy_spent, out.privacy_left) == (0.0, 2.0)
    plain = dataset_service.to_out(dataset_service.by_ref(session, hub["south"], "south/open"))
    assert (plain.privacy_budget, plain.privacy_spent, plain.privacy_left) == (None, None, None)
    [registered] = [p for p in session.scalars(select(LedgerEntry.payload).where(
        LedgerEntry.event_type == "dataset.registered")) if p["dataset"] == "north/budgeted"]
    assert registered["privacy_budget"] == {"epsilon": 2.0, "delta": DELTA}


@pytest.mark.parametrize("budget", [{"epsilon": 0, "delta": DELTA}, {"epsilon": 2, "delta": 1},
                                    {"epsilon": 2}])
def test_a_bad_budget_is_refused_naming_the_field(budget: dict) -> None:
    with pytest.raises(ValueError, match="privacy_budget"):
        card("x", budget)


def test_a_proposal_past_the_budget_or_without_dp_is_refused_with_the_numbers(session: Session, hub) -> None:
    with pytest.raises(BadRequest) as too_long:
        project_service.create(session, hub["north"], spec("too-long", rounds=4))
    expected = plan_refusal("north/budgeted", verdict(Budget(2.0, DELTA), [], [Charge(SIGMA)] * 4))
    assert str(too_long.value) == f"datasets: {expected}"
    assert "this project's 4 rounds need 2.31" in str(too_long.value)
    with pytest.raises(BadRequest, match="north/budgeted has a privacy budget, and a project without"):
        project_service.create(session, hub["north"], spec("plain", rounds=1, privacy=None))
    assert project_service.create(session, hub["north"], spec("fits", rounds=3)).id


def test_charges_are_mirrored_once_per_round_and_count_at_proposal_time(session: Session, hub) -> None:
    north, south = hub["north"], hub["south"]
    project = project_service.create(session, north, spec("first", rounds=3))
    run = Run(project_id=project.id)
    session.add(run)
    session.commit()
    first = fit_task(session, run, 1, north, "budgeted")
    record_charge(session, north, first.id, ChargeIn(noise_multiplier=SIGMA, sampling_rate=1.0))
    record_charge(session, north, first.id, ChargeIn(noise_multiplier=SIGMA, sampling_rate=1.0))
    replay = fit_task(session, run, 1, north, "budgeted")
    record_charge(session, north, replay.id, ChargeIn(noise_multiplier=SIGMA, sampling_rate=1.0))
    assert session.scalar(select(func.count()).select_from(PrivacyCharge)) == 1
    second = fit_task(session, run, 2, north, "budgeted")
    with pytest.raises(BadRequest, match="noise_multiplier: 1.0 is not the run's 3.5"):
        record_charge(session, north, second.id, ChargeIn(noise_multiplier=1.0, sampling_rate=1.0))
    with pytest.raises(NotFound):
        record_charge(session, south, second.id, ChargeIn(noise_multiplier=SIGMA, sampling_rate=1.0))
    record_charge(session, north, second.id, ChargeIn(noise_multiplier=SIGMA, sampling_rate=1.0))

    mirrored = [e for e in session.scalars(select(LedgerEntry).where(LedgerEntry.event_type == "privacy.charged")
                                           .order_by(LedgerEntry.seq))]
    assert [(e.payload["round"], e.payload["task_id"]) for e in mirrored] == [(1, first.id), (2, second.id)]
    dataset = dataset_service.by_ref(session, north, "north/budgeted")
    assert all(e.dataset_id == dataset.id for e in mirrored)
    two = epsilon_of([Charge(SIGMA)] * 2, DELTA)
    assert mirrored[-1].payload["spent_epsilon"] == pytest.approx(two)
    out = dataset_service.to_out(dataset)
    assert out.privacy_spent == pytest.approx(two) and out.privacy_left == pytest.approx(2.0 - two)

    with pytest.raises(BadRequest, match=r"north/budgeted: privacy budget ε = 2 at δ = 1e-05, spent 1.57, "
                                         r"reserved 0.00; "
                                         r"this project's 2 rounds need 1.57, together 2.31"):
        project_service.create(session, north, spec("second", rounds=2))
    assert project_service.create(session, north, spec("third", rounds=1)).id


def test_approved_projects_reserve_the_rounds_they_have_not_charged_yet(session: Session, hub) -> None:
    north = hub["north"]
    first = project_service.create(session, north, spec("first", rounds=2))
    assert project_service.create(session, north, spec("pending", rounds=2)).id  # nothing approved yet
    first.status = "approved"  # what the passed run proposal's effect does
    session.commit()
    two = epsilon_of([Charge(SIGMA)] * 2, DELTA)
    with pytest.raises(BadRequest) as refused:
        project_service.create(session, north, spec("second", rounds=2))
    assert str(refused.value) == (f"datasets: north/budgeted: privacy budget ε = 2 at δ = 1e-05, spent 0.00, "
                                  f"reserved {two:.2f} by first (2 rounds); this project's 2 rounds need {two:.2f}, "
                                  f"together {epsilon_of([Charge(SIGMA)] * 4, DELTA):.2f}")
    assert "together 2.31" in str(refused.value)

    run = Run(project_id=first.id)  # running: what it charged is spent, not reserved any more
    session.add(run)
    session.commit()
    record_charge(session, north, fit_task(session, run, 1, north, "budgeted").id,
                  ChargeIn(noise_multiplier=SIGMA, sampling_rate=1.0))
    one = epsilon_of([Charge(SIGMA)], DELTA)
    with pytest.raises(BadRequest, match=rf"spent {one:.2f}, reserved {one:.2f} by first \(1 rounds\); this "
                                         rf"project's 2 rounds"):
        project_service.create(session, north, spec("third", rounds=2))
    run.status = "failed"  # a finished run reserves nothing: one spent round and two new ones fit
    session.commit()
    assert project_service.create(session, north, spec("fourth", rounds=2)).id


def test_an_unbudgeted_or_non_dp_task_is_not_charged(session: Session, hub) -> None:
    north = hub["north"]
    project = project_service.create(session, north, spec("dp", rounds=1))
    run = Run(project_id=project.id)
    session.add(run)
    session.commit()
    task = fit_task(session, run, 1, north, "budgeted")
    task.kind = "evaluate"
    session.commit()
    with pytest.raises(BadRequest, match="only fit tasks spend a privacy budget"):
        record_charge(session, north, task.id, ChargeIn(noise_multiplier=SIGMA, sampling_rate=1.0))
    plain = project_service.create(session, hub["south"], ProjectCreate.model_validate(
        spec("plain", rounds=1, privacy=None).model_dump() | {"datasets": ["south/open"]}))
    plain_run = Run(project_id=plain.id)
    session.add(plain_run)
    session.commit()
    south_task = fit_task(session, plain_run, 1, hub["south"], "open")
    with pytest.raises(BadRequest, match="has no differential privacy to charge"):
        record_charge(session, hub["south"], south_task.id, ChargeIn(noise_multiplier=SIGMA, sampling_rate=1.0))


def test_a_dp_sgd_project_is_planned_and_charged_per_record_with_its_local_steps(session: Session, hub) -> None:
    north = hub["north"]
    dp_sgd = {"mechanism": "dp_sgd", "clip": 1.0, "epsilon": 4.0, "delta": DELTA}
    source_plan = RunPlan.of(spec("sgd", rounds=3, privacy=dp_sgd)).dp_sgd_plan_of_source(50)
    charge = source_plan.round_charge()
    assert (source_plan.rows, charge.steps, charge.sampling_rate) == (40, 2, 0.5)  # 10 of 50 rows validate
    with pytest.raises(BadRequest) as too_much:
        project_service.create(session, north, spec("sgd-big", rounds=3, privacy=dp_sgd))
    expected = plan_refusal("north/budgeted", verdict(Budget(2.0, DELTA), [], [charge] * 3))
    assert str(too_much.value) == f"datasets: {expected}"
    small = dp_sgd | {"epsilon": 1.5}
    project = project_service.create(session, north, spec("sgd", rounds=3, privacy=small))
    run = Run(project_id=project.id)
    session.add(run)
    session.commit()
    task = fit_task(session, run, 1, north, "budgeted")
    own = RunPlan.of(spec("sgd", rounds=3, privacy=small)).dp_sgd_plan_of_source(50).round_charge()
    with pytest.raises(BadRequest, match="steps: DP-SGD on budgeted takes 2 steps at rate 0.5 a round, the node "
                                         "reported 1"):
        record_charge(session, north, task.id, ChargeIn(noise_multiplier=own.noise_multiplier, sampling_rate=0.5))
    record_charge(session, north, task.id, ChargeIn(noise_multiplier=own.noise_multiplier, sampling_rate=0.5,
                                                    steps=2))
    row = session.scalar(select(PrivacyCharge))
    assert (row.steps, row.sampling_rate) == (2, 0.5)
    (entry,) = session.scalars(select(LedgerEntry).where(LedgerEntry.event_type == "privacy.charged"))
    assert entry.payload["steps"] == 2
    assert entry.payload["spent_epsilon"] == pytest.approx(epsilon_of([own], DELTA))
    card = model_cards._privacy_section(spec("sgd", rounds=3, privacy=small), [
        {"ref": "north/budgeted", "rows": 50}, {"ref": "south/open", "rows": 50}])
    assert card["privacy"]["mechanism"] == "dp_sgd"
    guarantee = card["privacy"]["per_dataset"]["north/budgeted"]
    assert guarantee["epsilon"] <= 1.5 and guarantee["rounds"] == 6 and guarantee["steps_per_round"] == 2
