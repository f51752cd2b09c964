"""Credit accounts on both backends: balances equal the ledger, spends never overdraw, awards count once."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from consortium.governance.credits import CreditReason, CreditRules
from consortium.governance.policy import default_policy
from consortium.hub.db.models import LedgerEntry, Model, Org, Project
from consortium.hub.db.session import make_engine, migrate, session_factory
from consortium.hub.services import credits, hub_identity
from consortium.hub.services import policy as policies
from consortium.hub.services.errors import PaymentRequired
from consortium.hub.services.hub_key import HubKey

names = itertools.count()


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    migrate(engine)
    hub_identity.start(engine, HubKey.generate())
    factory = session_factory(engine)
    with factory() as session:
        policies.ensure(session)
        session.commit()
    yield factory
    engine.dispose()


def new_org(session: Session) -> Org:
    org = Org(name=f"org{next(names)}")
    session.add(org)
    session.commit()
    return org


def ledger_balance(session: Session, org: Org) -> int:
    """The balance read from the ledger alone: earned minus spent in the org's credit entries."""
    entries = session.scalars(select(LedgerEntry).where(LedgerEntry.event_type.in_(
        ["credits.earned", "credits.spent"])))
    return sum((1 if e.event_type == "credits.earned" else -1) * e.payload["amount"]
               for e in entries if e.payload["org"] == org.name)


moves = st.lists(st.tuples(st.booleans(), st.integers(1, 50)), max_size=25)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(moves)
def test_balances_equal_the_sum_of_ledger_entries_after_random_earns_and_spends(sessions, sequence):
    with sessions() as session:
        org = new_org(session)
        expected = 0
        for i, (is_earn, amount) in enumerate(sequence):
            if is_earn:
                credits.earn(session, org, amount, CreditReason.compute, f"run:{i}")
                expected += amount
            elif amount <= expected:
                credits.spend(session, org, amount, CreditReason.project, f"project:{i}")
                expected -= amount
            else:
                with pytest.raises(PaymentRequired, match=f"costs {amount} credits and the balance is {expected}"):
                    credits.spend(session, org, amount, CreditReason.project, f"project:{i}")
            session.commit()
        assert credits.balance(session, org) == expected == ledger_balance(session, org)
        assert credits.balances(session)[org.name] == expected


def test_an_award_or_charge_with_the_same_reference_counts_once(sessions):
    with sessions() as session:
        org = new_org(session)
        credits.earn(session, org, 10, CreditReason.compute, "run:1")
        credits.earn(session, org, 10, CreditReason.compute, "run:1")
        credits.spend(session, org, 4, CreditReason.model_download, "model:3")
        credits.spend(session, org, 4, CreditReason.model_download, "model:3")
        session.commit()
        assert credits.balance(session, org) == 6 == ledger_balance(session, org)
        assert [m.amount for m in credits.history(session, org)] == [-4, 10]
        with pytest.raises(ValueError, match="not a reason to earn"):
            credits.earn(session, org, 1, CreditReason.project, "project:1")


def test_concurrent_spends_cannot_overdraw(sessions):
    with sessions() as session:
        org = new_org(session)
        credits.earn(session, org, 10, CreditReason.compute, "run:1")
        session.commit()
        org_id = org.id
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def spend(i: int) -> None:
        with sessions() as session:
            barrier.wait()
            try:
                credits.spend(session, session.get(Org, org_id), 3, CreditReason.project, f"project:{i}")
                session.commit()
                outcomes.append("paid")
            except PaymentRequired:
                session.rollback()
                outcomes.append("refused")

    threads = [threading.Thread(target=spend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["paid"] * 3 + ["refused"] * 5
    with sessions() as session:
        org = session.get(Org, org_id)
        assert credits.balance(session, org) == 1 == ledger_balance(session, org)


def test_projects_past_the_free_quota_are_charged_to_the_proposers_org(sessions):
    with sessions() as session:
        policies.adopt(session, default_policy().model_copy(update={
            "version": 2, "credits": CreditRules(free_projects=1, project_cost=5)}), proposal_id=None)
        org = new_org(session)
        credits.earn(session, org, 7, CreditReason.compute, "run:1")
        first, second, third = (Project(name=f"p{next(names)}", spec={}, spec_hash="0" * 64,
                                        proposer=f"org:{org.name}") for _ in range(3))
        for project in (first, second, third):
            session.add(project)
            session.flush()
            try:
                credits.charge_project(session, org, project)
            except PaymentRequired as exc:
                assert project is third and exc.fields == {"cost": 5, "balance": 2}
        assert credits.balance(session, org) == 2


def test_a_release_pool_goes_to_measured_contributors(sessions):
    with sessions() as session:
        a, b = new_org(session), new_org(session)
        model = Model(run_id=1, project_id=1, params_sha256="0" * 64, license="CC-BY-4.0", card_markdown="",
                      card={"contributions": {"method": "gtg-shapley", "values": {a.name: 0.3, b.name: 0.1}}})
        awards = credits.award_release(session, _with_id(session, model))
        assert awards == {a.name: 75, b.name: 25}
        assert credits.balance(session, a) == 75 and credits.balance(session, b) == 25
        assert credits.award_release(session, Model(id=999, card={})) == {}


def _with_id(session: Session, model: Model) -> Model:
    """The model as the award sees it, without the runs and projects its foreign keys would need."""
    model.id = 12345
    return model
