"""Setting up `consortium bench scale`'s consortium: N orgs, N datasets, one project approved by all.

Everything goes through the hub's real HTTP paths, as `consortium org`, `consortium dataset add` and
`consortium vote` do (the same client and action functions), several requests at a time: the admin proposes
each org, the org enrols its fresh Ed25519 key with a one-time token, the first org (admitted on proposal, the
electorate of every other admission since they all open while it is the only member) votes each one in, each
org registers its dataset card and signs its yes to run the project.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from consortium.client import HubClient
from consortium.crypto import OrgIdentity, generate_org_key, load_org_identity
from consortium.launch import HubProcess
from consortium.node import actions
from consortium.protocol import DatasetCardIn, EnrolRequest, ProjectCreate

T = TypeVar("T")
FEATURES, CLASSES = 64, 10


@dataclass(frozen=True)
class ScaleConsortium:
    """The orgs (name -> org directory with its key) and the approved project's id."""

    org_dirs: dict[str, Path]
    project_id: int


def org_names(n: int) -> list[str]:
    return [f"org-{i:04d}" for i in range(n)]


def _parallel(jobs: Iterable[Callable[[], T]], threads: int) -> list[T]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda job: job(), list(jobs)))


def _dataset(workdir: Path, rows: int = 20, seed: int = 0) -> tuple[Any, DatasetCardIn]:
    """One small table (64 features, 10 classes) and its card: every org registers a card of this shape."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.random((rows, FEATURES)), columns=[f"p{i}" for i in range(FEATURES)])
    frame["label"] = np.arange(rows) % CLASSES
    path = workdir / "scale-data.csv"
    frame.to_csv(path, index=False)
    return actions.prepare_dataset(path, "scale", "CC-BY-4.0", target="label", description="bench scale data")


def scale_spec(orgs: list[str], rounds: int, hidden: int, round_timeout: float) -> ProjectCreate:
    """A classifier (64 -> hidden -> 10) over every org's ``scale`` dataset, FedAvg, no hub test set."""
    return ProjectCreate.model_validate({
        "name": f"scale-{len(orgs)}",
        "algorithm": {"name": "classifier", "hyperparameters": {
            "layers": [FEATURES, hidden, CLASSES], "lr": 0.05, "local_epochs": 1, "batch_size": 32}},
        "strategy": {"name": "fedavg"},
        "datasets": [f"{org}/scale" for org in orgs],
        "rounds": rounds,
        "min_nodes": max(1, len(orgs) // 2),
        "round_timeout": round_timeout,
        "seed": 0,
    })


def provision(hub: HubProcess, workdir: Path, n: int, rounds: int, hidden: int = 32,
              round_timeout: float = 120.0, threads: int = 8) -> ScaleConsortium:
    """Enrol and admit ``n`` orgs, register their datasets and have all of them approve one project."""
    names = org_names(n)
    dirs = {name: workdir / "orgs" / name for name in names}
    identities: dict[str, OrgIdentity] = {name: generate_org_key(dirs[name], name) for name in names}
    loaded, card = _dataset(workdir)

    def join(name: str) -> Callable[[], None]:
        def job() -> None:
            with hub.client() as admin:
                admin.create_org(name)
                token = admin.enrolment_token(name)
            with HubClient(hub.url, ca_file=hub.ca_file) as anonymous:
                anonymous.enrol(EnrolRequest(org=name, token=token, public_key=identities[name].public_key_b64))
        return job

    first = names[0]
    join(first)()  # the first org is admitted on proposal: nobody is there to vote yet
    _parallel((join(name) for name in names[1:]), threads)
    with hub.client() as admin:
        pending = {p["subject"]["org"]: p["id"] for p in admin.proposals(status="open", kind="admit_org")}

    def admit(proposal_id: int) -> Callable[[], None]:
        def job() -> None:
            with HubClient(hub.url, identity=load_org_identity(dirs[first]), ca_file=hub.ca_file) as client:
                actions.cast_vote(client, dirs[first], proposal_id, "yes", "bench scale")
        return job

    _parallel((admit(pending[name]) for name in names[1:] if name in pending), threads)

    def register(name: str) -> Callable[[], None]:
        def job() -> None:
            with HubClient(hub.url, identity=identities[name], ca_file=hub.ca_file) as client:
                actions.register_dataset(client, dirs[name], loaded, card)
        return job

    _parallel((register(name) for name in names), threads)
    with hub.client() as admin:
        project = admin.create_project(scale_spec(names, rounds, hidden, round_timeout))

    def approve(name: str) -> Callable[[], None]:
        def job() -> None:
            with HubClient(hub.url, identity=identities[name], ca_file=hub.ca_file) as client:
                actions.cast_vote(client, dirs[name], project["proposal_id"], "yes")
        return job

    _parallel((approve(name) for name in names), threads)
    with hub.client() as admin:
        approved = admin.project(project["id"])
    if len(approved["approved_orgs"]) != n:
        raise RuntimeError(f"{len(approved['approved_orgs'])} of {n} orgs approved the bench project")
    return ScaleConsortium(dirs, project["id"])
