"""Shared fixtures: one torch thread, the two database backends every hub test runs on, and a small mixed-type
table for the data-file tests, a private CA with its certificates for the TLS tests."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


from consortium.bench.pg_scratch import scratch_database
torch.set_num_threads(1)
os.environ.setdefault("CONSORTIUM_TORCH_THREADS", "1")

PG_ADMIN_URL = os.environ.get("CONSORTIUM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_available() -> str | None:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc)


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, empty database per test: a SQLite file, or a new PostgreSQL database dropped afterwards."""
    yield from _fresh_database(request.param, tmp_path_factory)


@pytest.fixture(scope="module", params=BACKENDS)
def module_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like ``db_url`` but shared by the tests of one module."""
    yield from _fresh_database(request.param, tmp_path_factory)


def _require_pg() -> None:
    problem = _pg_available()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but unreachable: {problem}")
        pytest.skip(f"PostgreSQL not reachable: {problem}")


@pytest.fixture
def pg_admin_url() -> str:
    """The PostgreSQL admin URL (the test is skipped when the server is unreachable, failed in CI)."""
    _require_pg()
    return PG_ADMIN_URL


@pytest.fixture
def haproxy() -> None:
    """Skip the test when haproxy is not installed (fail it in CI, which installs it)."""
    from consortium.bench.replica_lab import haproxy_missing

    if haproxy_missing():
        if os.environ.get("CI"):
            pytest.fail("haproxy is required in CI (.ci/run installs it)")
        pytest.skip("haproxy is not installed (apt-get install haproxy)")


def _fresh_database(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'hub.db'}"
        return
    _require_pg()
    with scratch_database(PG_ADMIN_URL, "consortium") as url:
        yield url


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """A small mixed-type table: digits pixels plus float, bool and string columns and an int label."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    n = 60
    frame = pd.DataFrame(digits.data[:n, :6], columns=[f"px{i}" for i in range(6)])
    rng = np.random.default_rng(0)
    frame["weight"] = rng.normal(size=n)
    frame["weight"] = frame["weight"].astype("float64")
    frame.loc[3, "weight"] = 1 / 3
    frame["count"] = rng.integers(-5, 5, size=n)
    frame["smoker"] = rng.random(n) > 0.5
    frame["ward"] = [f"ward-{i % 3}" for i in range(n - 1)] + ["Zürich ☃"]
    frame["label"] = digits.target[:n]
    return frame


def _drive_in_process(state, run_id: int, orgs: dict, answer, timeout: float = 120.0) -> None:
    """Run ``RunDriver`` for ``run_id`` in a thread and answer each task it hands out with the bytes of
    ``answer(org, task)``, through the same service calls the node endpoints make."""
    import threading
    import time
    from datetime import UTC, datetime

    from consortium.hub.live import Answer
    from consortium.hub.routers.runs import hand_to_driver
    from consortium.hub.scheduler import RunDriver
    from consortium.hub.services import runs as run_service
    from consortium.protocol import TaskKind

    stop = threading.Event()
    driver = threading.Thread(target=RunDriver(state, run_id, stop), daemon=True)
    driver.start()
    deadline = time.monotonic() + timeout
    try:
        while driver.is_alive() and time.monotonic() < deadline:
            for org, principal in orgs.items():
                task = state.board.take(principal.org_id, datetime.now(UTC))
                if task is None:
                    continue
                row = state.board.row(task.id)
                payload = answer(org, task)
                with state.sessions() as session:
                    if task.kind == TaskKind.evaluate:
                        _, done = run_service.submit_result(
                            session, principal, task.id, payload, datetime.now(UTC),
                            rules=state.run_rules.get, known=row)
                    else:
                        _, done = run_service.submit_update(
                            session, state.blobs, state.cache, principal, task.id, payload, datetime.now(UTC),
                            rules=state.run_rules.get, known=row)
                assert isinstance(done, Answer)
                hand_to_driver(state, run_id, done)
            time.sleep(0.005)
    finally:
        stop.set()
        driver.join(10)
    assert not driver.is_alive(), "the run did not finish"


@pytest.fixture
def drive_in_process():
    """:func:`_drive_in_process`: a hub run driven in this process, nodes played by a function."""
    return _drive_in_process


def _seed_run(sessions, project, orgs: tuple[str, ...], dataset: str, schema: dict, rows: int) -> tuple[int, dict]:
    """Each org with one dataset of ``rows`` rows (ids in ``orgs`` order), the project already approved, and a
    run of it: the database a driver test starts from. Returns the run id and each org as a caller."""
    from consortium.hub.db.models import Dataset, Org, Project, ProjectDataset, Run
    from consortium.hub.services.identity import Principal
    from consortium.protocol import Role

    callers, dataset_ids = {}, []
    with sessions() as session:
        for name in orgs:
            org = Org(name=name)
            session.add(org)
            session.flush()
            data = Dataset(org_id=org.id, name=dataset, schema=schema, rows=rows, sha256="0" * 64,
                           license="CC0-1.0", visibility="members", file_format="csv")
            session.add(data)
            session.flush()
            dataset_ids.append(data.id)
            callers[name] = Principal(kind="org", name=name, role=Role.steward, org_id=org.id, org_name=name)
        assert dataset_ids == sorted(dataset_ids)
        row = Project(name=project.name, spec=project.model_dump(mode="json"), spec_hash="1" * 64,
                      proposer="admin", status="approved")
        session.add(row)
        session.flush()
        session.add_all([ProjectDataset(project_id=row.id, dataset_id=d) for d in dataset_ids])
        run = Run(project_id=row.id)
        session.add(run)
        session.commit()
        return run.id, callers


@pytest.fixture
def seed_run():
    """:func:`_seed_run`: orgs with a dataset each, an approved project and a run, for driver tests."""
    return _seed_run


@dataclass(frozen=True)
class PrivatePKI:
    """PEM files of a private CA, a server certificate it signed for 127.0.0.1 and localhost (with its key),
    one it signed for another host name only, and an unrelated CA."""

    ca: Path
    cert: Path
    key: Path
    other_host_cert: Path
    other_host_key: Path
    other_ca: Path


@pytest.fixture(scope="session")
def private_pki(tmp_path_factory: pytest.TempPathFactory) -> PrivatePKI:
    """A private CA and its certificates, made with ``cryptography`` (for the TLS tests)."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _make_ca("consortium test CA")
    _, other_ca_cert = _make_ca("unrelated CA")
    paths = {"ca": _write_pem(folder / "ca.pem", ca_cert),
             "other_ca": _write_pem(folder / "other-ca.pem", other_ca_cert)}
    for stem, names in (("hub", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                        ("elsewhere", [x509.DNSName("hub.elsewhere.example")])):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _sign(x509.CertificateBuilder().subject_name(_name(stem)).public_key(key.public_key())
                     .add_extension(x509.SubjectAlternativeName(names), critical=False)
                     .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                     .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False),
                     ca_cert.subject, ca_key)
        paths["cert" if stem == "hub" else "other_host_cert"] = _write_pem(folder / f"{stem}.pem", cert)
        key_path = folder / f"{stem}-key.pem"
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        paths["key" if stem == "hub" else "other_host_key"] = key_path
    return PrivatePKI(**paths)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _make_ca(common_name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name(common_name)).public_key(key.public_key())
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    return key, _sign(builder, _name(common_name), key)


def _sign(builder: x509.CertificateBuilder, issuer: x509.Name, issuer_key) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (builder.issuer_name(issuer).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .sign(issuer_key, hashes.SHA256()))


def _write_pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path
