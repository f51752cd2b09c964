"""The hub's valuer: rounds valued in a background thread, written to the ledger, summed per org for the card."""

from __future__ import annotations

import pytest
import torch

from consortium.fl.core import LocalData
from consortium.hub.db.session import make_engine, migrate, session_factory
from consortium.hub.services import hub_identity
from consortium.hub.services.hub_key import HubKey
from consortium.hub.services.contributions import run_contributions
from consortium.hub.valuation import RoundJob, Valuer
from consortium.ledger_audit import verify_from_db
from consortium.plan import RunPlan
from consortium.protocol import ProjectCreate
from consortium.sim.datasets import load_dataset
from consortium.valuation_wire import ValuationSpec

SOURCES = ["north/digits", "south/digits", "east/noise"]


@pytest.fixture(scope="module")
def round_inputs():
    digits = load_dataset("digits")
    spec = ProjectCreate.model_validate({
        "name": "valued", "rounds": 2, "seed": 4, "datasets": SOURCES, "valuation": {},
        "algorithm": {"name": "classifier", "hyperparameters": {"layers": [64, 10], "optimizer": "sgd", "lr": 0.1,
                                                                "local_epochs": 1, "batch_size": 16}}})
    plan = RunPlan.of(spec, num_features=64, clients=3)
    params = plan.init_params()
    shares = [LocalData(digits.train.x[i * 150:(i + 1) * 150], digits.train.y[i * 150:(i + 1) * 150]) for i in range(3)]
    shares[2] = LocalData(shares[2].x, torch.randint(0, 10, (150,), generator=torch.Generator().manual_seed(1)))
    updates = [plan.algorithm.local_update(plan.hp, params, data, seed=i) for i, data in enumerate(shares)]
    return plan, params, updates, LocalData(digits.test.x[:300], digits.test.y[:300])


def job(round_inputs, round_number: int, spec: ValuationSpec) -> RoundJob:
    plan, params, updates, test = round_inputs
    return RoundJob(run_id=1, project_id=1, round_number=round_number, plan=plan, spec=spec, params=params,
                    server_state={}, updates=updates, sources=SOURCES, test_data=test)


def test_rounds_are_valued_in_the_background_and_summed_per_org_from_the_ledger(round_inputs, db_url):
    engine = make_engine(db_url)
    migrate(engine)
    hub_identity.start(engine, HubKey.generate())
    sessions = session_factory(engine)
    valuer = Valuer(sessions)
    try:
        valuer.submit(job(round_inputs, 1, ValuationSpec()))
        valuer.submit(job(round_inputs, 2, ValuationSpec(metric="f1")))
        valuer.submit(job(round_inputs, 3, ValuationSpec(method="leave-one-out")))
        assert valuer.wait_run(1, timeout=120)
        with sessions() as session:
            card = run_contributions(session, project_id=1, run_id=1)
            other_run = run_contributions(session, project_id=1, run_id=2)
    finally:
        valuer.close()
    assert card["rounds_valued"] == [1, 3] and card["method"] == "leave-one-out" and card["metric"] == "loss"
    assert card["rounds_not_valued"] == [{"round": 2, "reason": card["rounds_not_valued"][0]["reason"]}]
    assert "'f1'" in card["rounds_not_valued"][0]["reason"]
    assert set(card["values"]) == {"north", "south", "east"}
    assert min(card["values"], key=card["values"].get) == "east"
    assert other_run["values"] == {} and other_run["rounds_valued"] == []
    report = verify_from_db(db_url)
    assert report.ok, report.reason
    engine.dispose()


def test_waiting_for_a_run_with_nothing_queued_returns_at_once(db_url):
    engine = make_engine(db_url)
    valuer = Valuer(session_factory(engine))
    try:
        assert valuer.wait_run(42, timeout=0.01)
    finally:
        valuer.close()
        engine.dispose()


def test_a_secure_run_is_valued_by_participation_and_says_so():
    card = run_contributions(None, 1, 1, participation={"south": 3, "north": 5})  # type: ignore[arg-type]
    assert card["method"] == "participation" and card["values"] == {"north": 5.0, "south": 3.0}
    assert "secure aggregation" in card["note"]
