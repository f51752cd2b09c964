"""The fault harness's laboratory: a real hub process, three real node processes and the digits consortium
(:mod:`consortium.scenario`), with the helpers every fault scenario shares (``consortium bench faults``,
``tests/faults/``)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from consortium.bench import faultcheck
from consortium.atomic import write_bytes_atomic
from consortium.client import HubClient
from consortium.faults import ENV
from consortium.launch import HubProcess, Process, restart_hub, start_hub, start_node
from consortium.protocol import ProjectCreate, RunProgress
from consortium.scenario import ORGS, DigitsConsortium, digits_spec, propose_and_approve, provision_digits

HYPERPARAMETERS: dict[str, Any] = {"layers": [64, 32, 10], "lr": 0.05, "momentum": 0.9, "local_epochs": 1,
                                   "batch_size": 32}
"""A small digits MLP: rounds of a few tens of milliseconds, so that faults, not training, fill the time."""


@dataclass
class Lab:
    """A hub, the digits consortium on it and its nodes (started on demand, through ``node_url`` when set:
    e.g. a fault proxy)."""

    workdir: Path
    hub: HubProcess
    consortium: DigitsConsortium
    db_url: str | None = None
    nodes: dict[str, Process] = field(default_factory=dict)
    log_offsets: dict[str, int] = field(default_factory=dict)
    """Where each node process's own lines start in its org's log (the log is appended to across restarts)."""

    @classmethod
    def open(cls, workdir: Path, db_url: str | None = None) -> Lab:
        """A hub whose kill points :meth:`arm` arms (from the file ``workdir/kill-at``), the consortium on it."""
        hub = start_hub(Path(workdir) / "hub", db_url=db_url, env=cls.hub_env(Path(workdir)))
        try:
            return cls(Path(workdir), hub, provision_digits(hub, workdir, ORGS), db_url)
        except BaseException:
            hub.kill()
            raise

    @staticmethod
    def hub_env(workdir: Path) -> dict[str, str]:
        return {ENV: f"@{workdir / 'kill-at'}"}

    def arm(self, points: str) -> None:
        """Arm the running hub's kill points (``NAME:N[,...]``; empty: disarm), counted from now."""
        write_bytes_atomic(self.workdir / "kill-at", points.encode())

    def start_nodes(self, orgs: Sequence[str] = ORGS, url: str | None = None, poll_wait: float = 5.0,
                    env: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """Start the nodes of ``orgs`` (``env``: extra environment per org) and wait until each new process
        called the hub."""
        for org in orgs:
            self._spawn_node(org, url, poll_wait, (env or {}).get(org))
        self.wait_ready(orgs)

    def restart_node(self, org: str, url: str | None = None, poll_wait: float = 5.0) -> None:
        """SIGKILL the org's node and start a new one (without waiting for it)."""
        self.nodes[org].kill()
        self._spawn_node(org, url, poll_wait, None)

    def _spawn_node(self, org: str, url: str | None, poll_wait: float, env: Mapping[str, str] | None) -> None:
        log = self.consortium.org_dirs[org] / "node.log"
        self.log_offsets[org] = log.stat().st_size if log.exists() else 0
        self.nodes[org] = start_node(url or self.hub.url, self.consortium.org_dirs[org], poll_wait=poll_wait,
                                     env=env)

    def node_polling(self, org: str) -> bool:
        """Whether the org's current node process started polling (its own log line says so). The hub's
        last-seen time cannot tell: a killed node's long poll still pending on the hub refreshes it."""
        log = self.consortium.org_dirs[org] / "node.log"
        with open(log, "rb") as handle:
            handle.seek(self.log_offsets.get(org, 0))
            return b" polling " in handle.read()

    def wait_ready(self, orgs: Sequence[str] = ORGS, timeout: float = 180.0) -> None:
        """Wait until each org's current node process polls the hub (``TimeoutError`` after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not all(self.node_polling(org) for org in orgs):
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes {list(orgs)} did not start polling within {timeout:.0f} s\n{self.logs()}")
            time.sleep(0.1)
        time.sleep(0.5)  # the first long poll reaches the hub

    def restart_hub(self) -> None:
        """SIGKILL the hub if it still runs, disarm its kill points and start it again on the same database,
        blobs and port."""
        self.hub.kill()
        self.arm("")
        self.hub = restart_hub(self.hub, env=self.hub_env(self.workdir))

    @staticmethod
    def spec(name: str, rounds: int, **overrides: Any) -> ProjectCreate:
        """The digits spec of the fault runs: all three orgs, the small MLP, seed 11 unless overridden."""
        fields: dict[str, Any] = {"min_nodes": 3, "round_timeout": 60.0, "seed": 11,
                                  "algorithm": {"name": "classifier", "hyperparameters": HYPERPARAMETERS}}
        fields.update(overrides)
        return digits_spec(name, ORGS, rounds, **fields)

    def project(self, spec: ProjectCreate) -> dict:
        return propose_and_approve(self.consortium, spec)

    def admin(self) -> HubClient:
        return self.hub.client()

    def check(self, run_id: int) -> tuple[faultcheck.Findings, dict[str, int]]:
        return faultcheck.check_all(self.hub.data_dir, self.db_url, run_id)

    def ledger(self) -> list[dict]:
        """Every ledger entry (paged)."""
        entries: list[dict] = []
        with self.admin() as admin:
            while page := admin.ledger(after=entries[-1]["seq"] if entries else 0, limit=10_000):
                entries += page
        return entries

    def logs(self) -> str:
        parts = [f"--- hub ---\n{self.hub.log_tail(40)}"]
        parts += [f"--- {name} ---\n{proc.log_tail(15)}" for name, proc in self.nodes.items()]
        return "\n".join(parts)

    def close(self) -> None:
        for proc in self.nodes.values():
            proc.kill()
        self.hub.stop()


class Cluster(Protocol):
    """What :func:`wait_ended` needs of a lab: an admin client and the processes' logs."""

    def admin(self) -> HubClient: ...

    def logs(self) -> str: ...


def wait_ended(lab: Cluster, run_id: int, timeout: float = 240.0) -> RunProgress:
    """The run's progress once it is no longer running (``TimeoutError`` after ``timeout`` seconds); the hub
    may be down meanwhile (the caller restarts it). ``lab``: a :class:`Lab` or
    :class:`consortium.bench.replica_lab.Replicas`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with lab.admin() as admin:
                progress = admin.progress(run_id, wait=2.0)
                if progress.run.status != "running":
                    return admin.progress(run_id)
        except Exception:  # the hub is restarting
            time.sleep(0.2)
    raise TimeoutError(f"run {run_id} did not end within {timeout:.0f} s\n{lab.logs()}")


def params_trail(progress: RunProgress) -> list[str]:
    """The params digest of every round, in order: what an uninterrupted run of the same seed must match."""
    return [r.params_sha256 for r in sorted(progress.rounds, key=lambda r: r.round)]


def run_events(entries: list[dict], run_id: int, event_type: str) -> list[dict]:
    return [e for e in entries if e["event_type"] == event_type and (e.get("payload") or {}).get("run_id") == run_id]
