"""The hub's anonymisation gate on both backends: a publish whose report is below the policy's k, l or t is
refused naming the measured values and the columns at fault (nothing staged is kept, no row); a voted policy
raises the bar; the report is recorded in the ledger. DP synthetic data is charged to the dataset's privacy
budget, refused when it would overspend or when its noise does not give the epsilon it declares."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.fl.privacy.accountant import noise_multiplier_for
from consortium.governance.open_data_rules import OpenDataRules
from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import Dataset, LedgerEntry, Org
from consortium.hub.db.open_data_models import OpenDataVersion
from consortium.hub.services import open_data
from consortium.hub.services import policy as policies
from consortium.hub.services.errors import BadRequest
from consortium.hub.services.identity import Principal
from consortium.hub.services.privacy_budgets import spent_and_left
from consortium.open_data_wire import AnonymityReport, Datasheet, OpenVersionIn, SyntheticRelease
from consortium.protocol import Role

SCHEMA = {"features": [{"name": "age", "dtype": "string"}, {"name": "diagnosis", "dtype": "string"}],
          "target": None}
TABLE = "2" * 64
SHEET = Datasheet.model_validate({key: f"{key} answer" for key in Datasheet.model_fields})
FILE = b"age,diagnosis\n30-39,flu\n30-39,none\n"
DIGEST = hashlib.sha256(FILE).hexdigest()
DELTA = 1e-6


@pytest.fixture
def north(session: Session) -> Principal:
    policies.ensure(session)
    org = Org(name="north")
    session.add(org)
    session.flush()
    session.add(Dataset(org_id=org.id, name="people", schema=SCHEMA, rows=2, sha256=TABLE, license="CC0-1.0",
                        visibility="members", file_format="csv", privacy_epsilon=2.0, privacy_delta=DELTA))
    session.commit()
    return Principal("org", org.name, Role.steward, org.id, org.name)


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def report(k: int, l_found: int = 2, t: float | None = None) -> AnonymityReport:
    return AnonymityReport(about_people=True, identifiers=["name"], quasi=["age"], sensitive=["diagnosis"], k=k,
                           l_diversity=l_found, t_closeness=t)


def publish(session: Session, north: Principal, blobs: BlobStore, version: str, **extra) -> OpenDataVersion:
    open_data.append_chunk(session, north, blobs, "north/people", DIGEST, 0, FILE)
    body = OpenVersionIn(version=version, sha256=DIGEST, table_sha256=TABLE, rows=2, license="CC0-1.0",
                         datasheet=SHEET, **extra)
    return open_data.publish(session, north, blobs, "north/people", body)


def nothing_left(session: Session, blobs: BlobStore, versions: int = 0) -> bool:
    files = [p for p in blobs.root.rglob("*") if p.is_file() and "uploads" in p.parts]
    return not files and len(session.scalars(select(OpenDataVersion)).all()) == versions


def test_a_publish_below_the_policys_k_is_refused_naming_k_and_the_columns(session, north, blobs) -> None:
    with pytest.raises(BadRequest, match=r"3-anonymous and 2-diverse over \['age'\].*k >= 5.*at fault: \['age'\]"):
        publish(session, north, blobs, "1", anonymity=report(3))
    assert nothing_left(session, blobs)
    with pytest.raises(BadRequest, match=r"l = 1 < 2.*at fault: \['diagnosis'\]"):
        publish(session, north, blobs, "1", anonymity=report(5, 1))
    people = report(5).model_copy(update={"quasi": [], "k": None, "l_diversity": None})
    with pytest.raises(BadRequest, match="declares no quasi-identifiers"):
        publish(session, north, blobs, "1", anonymity=people)
    assert nothing_left(session, blobs)
    with pytest.raises(BadRequest, match="carries no anonymisation report"):
        publish(session, north, blobs, "1")
    assert nothing_left(session, blobs)
    row = publish(session, north, blobs, "1", anonymity=report(5))
    assert row.anonymity is not None and row.anonymity["k"] == 5
    entry = session.scalars(select(LedgerEntry).where(LedgerEntry.event_type == "dataset.published")).one()
    assert entry.payload["anonymity"]["k"] == 5 and entry.payload["anonymity"]["quasi"] == ["age"]


def test_a_voted_policy_raises_k_and_asks_for_t(session, north, blobs) -> None:
    _, policy = policies.current(session)
    policies.adopt(session, policy.model_copy(update={"version": 2, "open_data": OpenDataRules(min_k=10, max_t=0.2)}),
                   None)
    session.commit()
    with pytest.raises(BadRequest, match=r"k = 5 < 10; t = unmeasured > 0.2"):
        publish(session, north, blobs, "1", anonymity=report(5))
    with pytest.raises(BadRequest, match=r"t = 0.300 > 0.2.*at fault: \['diagnosis'\]"):
        publish(session, north, blobs, "1", anonymity=report(12, 2, 0.3))
    assert publish(session, north, blobs, "1", anonymity=report(12, 2, 0.1)).anonymity["t_closeness"] == 0.1


def release(epsilon: float, measurements: int = 2, noise: float | None = None) -> SyntheticRelease:
    noise = noise or noise_multiplier_for(epsilon, DELTA, 1.0, measurements)
    return SyntheticRelease(epsilon=epsilon, delta=DELTA, noise_multiplier=noise, measurements=measurements,
                            generator="test", marginals=[["age", "diagnosis"]])


def test_synthetic_data_is_charged_to_the_budget_and_refused_when_over(session, north, blobs) -> None:
    dataset = session.scalars(select(Dataset)).one()
    open_data.append_chunk(session, north, blobs, "north/people", DIGEST, 0, FILE)
    body = OpenVersionIn(version="s1", sha256=DIGEST, table_sha256="3" * 64, rows=7, license="CC0-1.0",
                         datasheet=SHEET, synthetic=release(1.0))
    first = open_data.publish(session, north, blobs, "north/people", body)  # its own table hash and rows
    assert first.synthetic is not None and first.synthetic["epsilon"] == 1.0
    spent, left = spent_and_left(session, dataset)
    assert spent == pytest.approx(1.0, abs=0.01) and left == pytest.approx(1.0, abs=0.01)
    entry = session.scalars(select(LedgerEntry).where(LedgerEntry.event_type == "dataset.published")).one()
    assert entry.payload["synthetic"]["epsilon"] == 1.0 and entry.payload["synthetic"]["spent_epsilon"] > 0.99
    with pytest.raises(BadRequest, match=r"privacy budget of north/people would pass ε = 2.*nothing was published"):
        publish(session, north, blobs, "s2", synthetic=release(2.0))  # Gaussians compose below the sum
    assert nothing_left(session, blobs, versions=1)
    with pytest.raises(BadRequest, match="more than the declared"):
        publish(session, north, blobs, "s2", synthetic=release(0.5, noise=1.0))
    assert nothing_left(session, blobs, versions=1)
    assert publish(session, north, blobs, "s2", synthetic=release(0.7)).synthetic["measurements"] == 2
