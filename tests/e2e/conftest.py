"""End-to-end fixtures: a real hub process (SQLite or PostgreSQL) and real node processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consortium.launch import HubProcess, Process, start_hub, start_node
from consortium.scenario import ORGS, DigitsConsortium, provision_digits


class Cluster:
    """A running hub with the digits consortium provisioned; nodes are started on demand."""

    def __init__(self, hub: HubProcess, consortium: DigitsConsortium, workdir: Path) -> None:
        self.hub = hub
        self.consortium = consortium
        self.workdir = workdir
        self.nodes: dict[str, Process] = {}

    def start_nodes(self, orgs=ORGS, poll_wait: float = 10.0) -> None:
        for org in orgs:
            self.nodes[org] = start_node(self.hub.url, self.consortium.org_dirs[org], poll_wait=poll_wait)
        with self.hub.client() as admin:
            admin.wait_online(list(orgs))

    def logs(self) -> str:
        parts = [f"--- hub ---\n{self.hub.log_tail(60)}"]
        parts += [f"--- {name} ---\n{proc.log_tail(30)}" for name, proc in self.nodes.items()]
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in self.nodes.values():
            proc.stop()
        self.hub.stop()


@pytest.fixture
def cluster(db_url: str, tmp_path: Path) -> Iterator[Cluster]:
    hub = start_hub(tmp_path / "hub", db_url=db_url)
    try:
        consortium = provision_digits(hub, tmp_path, ORGS)
        c = Cluster(hub, consortium, tmp_path)
        yield c
    finally:
        try:
            c.stop()
        except NameError:
            hub.stop()
