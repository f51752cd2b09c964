"""Two hub replicas on one PostgreSQL database and one blob store, behind a real HAProxy (round-robin), the
digits consortium provisioned through the proxy and three real node processes talking to the proxy only
(``consortium bench faults --replica-kills``, ``tests/e2e/test_replicas.py``)."""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import time
from pathlib import Path

from sqlalchemy import select

from consortium.client import HubClient
from consortium.hub.db.models import Round, Task
from consortium.hub.db.session import make_engine, session_factory
from consortium.hub.services import leases
from consortium.launch import HubProcess, Process, restart_hub, start_haproxy, start_hub, start_node
from consortium.scenario import ORGS, DigitsConsortium, provision_digits

LEASE_S = 3.0
"""The replicas' run lease: a killed driver's runs are taken over this long after its last renewal."""


def haproxy_missing() -> bool:
    """Whether this machine lacks the ``haproxy`` binary :func:`consortium.launch.start_haproxy` runs."""
    return shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists()


def start_replicas(db_url: str, workdir: Path, count: int, lease_s: float = LEASE_S, token: str | None = None,
                   ) -> tuple[list[HubProcess], Process, HubProcess]:
    """``count`` hub replicas on ``db_url`` with one blob store and hub key under ``workdir/shared``, started
    one after the other (the first applies the migrations and writes the hub key the others load), and HAProxy
    in front of them: (the replicas, the proxy, the front: the first replica with the proxy's URL). What was
    started is stopped again if a later start fails."""
    shared = Path(workdir) / "shared"
    token = token or "csm_" + secrets.token_urlsafe(32)
    args = ("--replica", "--lease-s", str(lease_s), "--blob-dir", str(shared / "blobs"),
            "--hub-key-file", str(shared / "hub-key.pem"))
    hubs: list[HubProcess] = []
    try:
        for i in range(1, count + 1):
            hubs.append(start_hub(Path(workdir) / f"replica-{i}", db_url=db_url, admin_token=token,
                                  extra_args=args))
        proxy, url = start_haproxy(Path(workdir) / "proxy", [h.port for h in hubs])
    except BaseException:
        for hub in hubs:
            hub.stop()
        raise
    return hubs, proxy, dataclasses.replace(hubs[0], url=url)


class Replicas:
    """Two replicas, the proxy in front of them, the digits consortium provisioned through the proxy."""

    def __init__(self, db_url: str, workdir: Path, lease_s: float = LEASE_S) -> None:
        self.db_url, self.workdir, self.lease_s = db_url, Path(workdir), lease_s
        self.token = "csm_" + secrets.token_urlsafe(32)
        self.hubs: list[HubProcess] = []
        self.nodes: dict[str, Process] = {}
        self.proxy: Process | None = None
        self.engine = make_engine(db_url)
        self.sessions = session_factory(self.engine)

    @property
    def blob_dir(self) -> Path:
        """The blob store both replicas share."""
        return self.workdir / "shared" / "blobs"

    def start(self) -> None:
        """Start the replicas one after the other (the first applies the migrations and makes the hub key the
        second then loads), the proxy, and provision the consortium through it."""
        self.hubs, self.proxy, self.front = start_replicas(self.db_url, self.workdir, 2, self.lease_s, self.token)
        self.url = self.front.url
        self.consortium: DigitsConsortium = provision_digits(self.front, self.workdir, ORGS)

    def admin(self) -> HubClient:
        """An admin client of the proxy."""
        return HubClient(self.url, token=self.token)

    def start_nodes(self) -> None:
        """Start each org's node against the proxy and wait until all are online."""
        for org in ORGS:
            self.nodes[org] = start_node(self.url, self.consortium.org_dirs[org], poll_wait=5.0)
        with self.admin() as admin:
            admin.wait_online(list(ORGS))

    def driver_of(self, run_id: int) -> HubProcess | None:
        """The replica holding a live lease on the run now (None: no live lease)."""
        with self.sessions() as session:
            held = leases.holder(session, run_id)
        if held is None or held[2] <= time.time():
            return None
        found = [h for h in self.hubs if f"-{h.popen.pid}-" in held[0]]
        return found[0] if found else None

    def wait_driver(self, run_id: int, timeout: float, other_than: HubProcess | None = None) -> HubProcess | None:
        """The replica (not ``other_than``) that holds the run's lease within ``timeout`` seconds (None: none)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hub = self.driver_of(run_id)
            if hub is not None and hub is not other_than:
                return hub
            time.sleep(0.05)
        return None

    def restart(self, hub: HubProcess) -> HubProcess:
        """SIGKILL ``hub`` if it still runs and start it again with the same arguments and port (so that the
        proxy's health check finds it again)."""
        hub.kill()
        new = restart_hub(hub)
        self.hubs[self.hubs.index(hub)] = new
        return new

    def open_rounds(self) -> list[tuple[int, int, int]]:
        """(run, round, attempt) of every round still open."""
        with self.sessions() as session:
            rows = session.execute(select(Round.run_id, Round.number, Round.attempt).where(Round.status == "open"))
            return [tuple(row) for row in rows]

    def update_blobs_left(self) -> list[str]:
        """Uploads of any task still in the shared blob store (replicas delete those they used), each as
        ``run R round N (STATUS) task T: DIGEST``."""
        with self.sessions() as session:
            rows = session.execute(select(Task.run_id, Round.number, Round.status, Task.id, Task.update_sha256)
                                   .join(Round, Task.round_id == Round.id).where(Task.update_sha256.is_not(None)))
            return sorted(f"run {run} round {number} ({status}) task {task}: {digest}"
                          for run, number, status, task, digest in rows
                          if (self.blob_dir / digest[:2] / digest).exists())

    def logs(self) -> str:
        parts = [f"--- replica {h.port} ---\n{h.log_tail(40)}" for h in self.hubs]
        parts += [f"--- {name} ---\n{p.log_tail(20)}" for name, p in self.nodes.items()]
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in [*self.nodes.values(), *self.hubs, *([self.proxy] if self.proxy else [])]:
            proc.stop()
        self.engine.dispose()
