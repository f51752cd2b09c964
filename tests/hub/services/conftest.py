"""A migrated database session on each backend, its ledger signed by a hub key, for the hub's service-level
tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from consortium.hub.db.session import make_engine, migrate, session_factory
from consortium.hub.services import hub_identity
from consortium.hub.services.hub_key import HubKey


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    engine = make_engine(db_url)
    migrate(engine)
    hub_identity.start(engine, HubKey.generate())
    with session_factory(engine)() as s:
        yield s
    engine.dispose()


def two_org_run(db_url: str, blob_dir, name: str, hyperparameters: dict, labels) -> Iterator[tuple]:
    """A hub state with an approved two-org (north, south) classifier run on 4 features whose hub test set has
    ``labels`` (30 rows), the run's id and the orgs' principals; the engine is disposed after the yield."""
    import torch

    from consortium.codec import encode_tensors
    from consortium.hub.blobs import BlobStore
    from consortium.hub.db.models import Dataset, Org, Project, ProjectDataset, Run
    from consortium.hub.events import Broker
    from consortium.hub.services.identity import Principal
    from consortium.hub.state import HubState
    from consortium.hub.tensor_cache import TensorCache
    from consortium.protocol import Role
    from consortium.scenario import digits_spec

    engine = make_engine(db_url)
    migrate(engine)
    hub_identity.start(engine, HubKey.generate())
    sessions = session_factory(engine)
    blobs = BlobStore(blob_dir)
    test_set = blobs.put(encode_tensors({"x": torch.rand(30, 4), "y": labels}))
    schema = {"features": [{"name": f"f{i}", "dtype": "float64"} for i in range(4)],
              "target": {"name": "label", "dtype": "int64"}}
    orgs = {}
    with sessions() as session:
        datasets = []
        for org_name in ("north", "south"):
            org = Org(name=org_name)
            session.add(org)
            session.flush()
            data = Dataset(org_id=org.id, name="digits", schema=schema, rows=100, sha256="0" * 64,
                           license="CC0-1.0", visibility="members", file_format="csv")
            session.add(data)
            session.flush()
            datasets.append(data.id)
            orgs[org_name] = Principal(kind="org", name=org_name, role=Role.steward, org_id=org.id,
                                       org_name=org_name)
        spec = digits_spec(name, list(orgs), rounds=2, min_nodes=2, round_timeout=60,
                           algorithm={"name": "classifier", "hyperparameters": hyperparameters})
        project = Project(name=name, spec=spec.model_dump(mode="json"), spec_hash="1" * 64,
                          proposer="admin", status="approved", test_set_sha256=test_set)
        session.add(project)
        session.flush()
        session.add_all([ProjectDataset(project_id=project.id, dataset_id=d) for d in datasets])
        run = Run(project_id=project.id)
        session.add(run)
        session.commit()
        run_id = run.id
    yield HubState(sessions=sessions, blobs=blobs, cache=TensorCache(blobs), broker=Broker(), code_version="t"), \
        run_id, orgs
    engine.dispose()


@pytest.fixture
def make_two_org_run():
    """:func:`two_org_run`, for a test module's own hub fixture to yield from."""
    return two_org_run
