"""Two hub replicas on one PostgreSQL database and one blob store, behind a real HAProxy (round-robin), with
three real node processes talking to the proxy only. The replica that holds the run's lease is SIGKILLed
mid-run: the other takes the lease over once it expires, replays from the last checkpoint, and the run ends
with the params of an uninterrupted run of the same seed; the ledger verifies, no round is left open and no
upload is left in the blob store."""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from consortium.client import HubClient
from consortium.hub.db.models import Round, Task
from consortium.hub.db.session import make_engine, session_factory
from consortium.hub.services import leases
from consortium.launch import HubProcess, Process, start_haproxy, start_hub, start_node
from consortium.ledger_audit import verify_from_hub
from consortium.scenario import ORGS, DigitsConsortium, digits_spec, propose_and_approve, provision_digits

from test_federated_run import wait_round, wait_run

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

LEASE_S = 3.0
TOKEN = "csm_replicas-e2e-admin-token-0123456789abcdef"


class Replicas:
    """Two replicas, the proxy in front of them, the digits consortium provisioned through the proxy."""

    def __init__(self, db_url: str, workdir: Path) -> None:
        self.db_url, self.workdir = db_url, workdir
        self.hubs: list[HubProcess] = []
        self.nodes: dict[str, Process] = {}
        self.proxy: Process | None = None
        self.engine = make_engine(db_url)
        self.sessions = session_factory(self.engine)

    def start(self) -> None:
        workdir, db_url = self.workdir, self.db_url
        shared = workdir / "shared"
        args = ("--replica", "--lease-s", str(LEASE_S), "--blob-dir", str(shared / "blobs"),
                "--hub-key-file", str(shared / "hub-key.pem"))
        # One after the other: the first applies the migrations and makes the hub key the second then loads.
        for i in (1, 2):
            self.hubs.append(start_hub(workdir / f"replica-{i}", db_url=db_url, admin_token=TOKEN, extra_args=args))
        self.proxy, self.url = start_haproxy(workdir / "proxy", [h.port for h in self.hubs])
        self.front = dataclasses.replace(self.hubs[0], url=self.url)
        self.consortium: DigitsConsortium = provision_digits(self.front, workdir, ORGS)

    def client(self) -> HubClient:
        return HubClient(self.url, token=TOKEN)

    def start_nodes(self) -> None:
        for org in ORGS:
            self.nodes[org] = start_node(self.url, self.consortium.org_dirs[org], poll_wait=5.0)
        with self.client() as admin:
            admin.wait_online(list(ORGS))

    def driver_of(self, run_id: int) -> HubProcess:
        """The replica holding the run's lease now."""
        with self.sessions() as session:
            held = leases.holder(session, run_id)
        assert held is not None and held[2] > time.time(), f"run {run_id} has no live lease: {held}"
        (hub,) = [h for h in self.hubs if f"-{h.popen.pid}-" in held[0]]
        return hub

    def open_rounds(self) -> list[tuple[int, int, int]]:
        with self.sessions() as session:
            rows = session.execute(select(Round.run_id, Round.number, Round.attempt).where(Round.status == "open"))
            return [tuple(row) for row in rows]

    def update_blobs_left(self) -> list[str]:
        """Uploads of any task still in the shared blob store (replicas delete those they used)."""
        with self.sessions() as session:
            digests = set(session.scalars(select(Task.update_sha256).where(Task.update_sha256.is_not(None))))
        return sorted(d for d in digests if (self.workdir / "shared" / "blobs" / d[:2] / d).exists())

    def logs(self) -> str:
        parts = [f"--- replica {h.port} ---\n{h.log_tail(40)}" for h in self.hubs]
        parts += [f"--- {name} ---\n{p.log_tail(20)}" for name, p in self.nodes.items()]
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in [*self.nodes.values(), *self.hubs, *([self.proxy] if self.proxy else [])]:
            proc.stop()
        self.engine.dispose()


@pytest.fixture
def replicas(db_url: str, tmp_path: Path) -> Iterator[Replicas]:
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        if os.environ.get("CI"):
            pytest.fail("haproxy is required in CI (.ci/run installs it)")
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    cluster = Replicas(db_url, tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_killing_the_replica_that_drives_a_run_costs_its_lease_not_the_run(replicas: Replicas) -> None:
    started = time.monotonic()
    replicas.start_nodes()
    base = dict(rounds=10, min_nodes=3, round_timeout=60.0, seed=7)
    reference = propose_and_approve(replicas.consortium, digits_spec("replicas-reference", ORGS, **base))
    interrupted = propose_and_approve(replicas.consortium, digits_spec("replicas-interrupted", ORGS, **base))
    with replicas.client() as admin:
        ref_started = time.monotonic()
        ref_progress = wait_run(admin, admin.start_run(reference["id"])["id"])
        ref_s = time.monotonic() - ref_started
        assert ref_progress.run.status == "completed", replicas.logs()
        run_id = admin.start_run(interrupted["id"])["id"]
        wait_round(admin, run_id, 3)
    victim = replicas.driver_of(run_id)
    victim.kill()
    killed_at = time.monotonic()
    survivor = next(h for h in replicas.hubs if h is not victim)
    with replicas.client() as admin:
        assert admin.run(run_id)["status"] == "running", "the run ended before the kill: make it longer"
        taken = victim
        while taken is victim and time.monotonic() < killed_at + LEASE_S + 10:
            time.sleep(0.1)
            try:
                taken = replicas.driver_of(run_id)
            except AssertionError:  # expired, not taken yet
                continue
        took_over_s = time.monotonic() - killed_at
        progress = wait_run(admin, run_id)
        assert progress.run.status == "completed", replicas.logs()
        assert verify_from_hub(admin).ok
        events = admin.ledger(limit=10_000)
    finished_s = time.monotonic() - killed_at
    assert taken is survivor, replicas.logs()
    # the lease's length, then at most a keeper tick (a third of it), with room for a loaded machine
    assert took_over_s <= LEASE_S * 4 / 3 + 3, took_over_s
    assert [r.round for r in progress.rounds] == list(range(1, 11))
    assert [r.params_sha256 for r in progress.rounds] == [r.params_sha256 for r in ref_progress.rounds]
    abandoned = [e for e in events if e["event_type"] == "round.abandoned" and e["payload"]["run_id"] == run_id]
    assert 1 <= len(abandoned) <= 2 and len({e["payload"]["round"] for e in abandoned}) == len(abandoned)
    assert replicas.open_rounds() == []
    assert replicas.update_blobs_left() == []
    walls = [r.wall_s for r in ref_progress.rounds]
    print(f"kill at {killed_at - started:.1f}s into the test; reference run {ref_s:.1f}s; "
          f"takeover {took_over_s:.2f}s after the kill, run done {finished_s:.2f}s after it; "
          f"reference rounds wall median {statistics.median(walls):.3f}s max {max(walls):.3f}s")
