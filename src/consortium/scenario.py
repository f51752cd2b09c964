"""The digits consortium used by the demo, the deployment benchmark and the end-to-end tests.

Three (or more) orgs each hold a label-Dirichlet share of scikit-learn's digits as a local CSV; the project
keeps the held-out test split on the hub.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from consortium.client import HubClient
from consortium.crypto import load_org_identity
from consortium.fl.data import dirichlet_label_partition
from consortium.launch import HubProcess, provision_org
from consortium.node import actions
from consortium.node.environments import prepare_environment
from consortium.codec import encode_tensors
from consortium.protocol import ProjectCreate

ORGS = ("north-clinic", "south-lab", "east-institute")
DIGITS_HYPERPARAMETERS: dict[str, Any] = {
    "layers": [64, 128, 10],
    "activation": "relu",
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "local_epochs": 2,
    "batch_size": 32,
}


def digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1], stratified 80/20 split: (x_train, x_test, y_train, y_test)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y.astype(np.int64), test_size=0.2, random_state=seed, stratify=y)


def write_org_csvs(workdir: Path, x: np.ndarray, y: np.ndarray, orgs: Sequence[str], alpha: float,
                   seed: int) -> dict[str, Path]:
    """One CSV per org holding its Dirichlet share (features p0..p63, column ``label``)."""
    parts = dirichlet_label_partition(y, len(orgs), alpha, seed)
    paths = {}
    for org, idx in zip(orgs, parts, strict=True):
        frame = pd.DataFrame(x[idx], columns=[f"p{i}" for i in range(x.shape[1])]).astype("float64")
        frame["label"] = y[idx]
        path = Path(workdir) / "data" / f"{org}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        paths[org] = path
    return paths


@dataclass
class DigitsConsortium:
    hub: HubProcess
    org_dirs: dict[str, Path]
    x_test: np.ndarray
    y_test: np.ndarray

    def refs(self, dataset: str = "digits") -> list[str]:
        return [f"{org}/{dataset}" for org in self.org_dirs]

    def org_client(self, org: str) -> HubClient:
        return HubClient(self.hub.url, identity=load_org_identity(self.org_dirs[org]), ca_file=self.hub.ca_file)

    def test_set_bytes(self) -> bytes:
        return encode_tensors({"x": torch.from_numpy(self.x_test), "y": torch.from_numpy(self.y_test)})


def provision_digits(
    hub: HubProcess,
    workdir: Path,
    orgs: Sequence[str] = ORGS,
    alpha: float = 0.5,
    seed: int = 42,
    report: Callable[[str], None] | None = None,
) -> DigitsConsortium:
    """Admit and enrol each org, write its share of digits and register the dataset card."""
    x_train, x_test, y_train, y_test = digits_split()
    csvs = write_org_csvs(workdir, x_train, y_train, orgs, alpha=alpha, seed=seed)
    org_dirs = {org: Path(workdir) / "orgs" / org for org in orgs}
    with hub.client() as admin:
        for i, org in enumerate(orgs):
            identity = provision_org(admin, hub.url, org_dirs[org], org,
                                     voters={member: org_dirs[member] for member in orgs[:i]}, ca_file=hub.ca_file)
            loaded, card = actions.prepare_dataset(
                csvs[org], "digits", "CC-BY-4.0", target="label",
                description=f"{org}'s share of the handwritten digits (8x8, scaled to [0,1])")
            with HubClient(hub.url, identity=identity, ca_file=hub.ca_file) as client:
                actions.register_dataset(client, org_dirs[org], loaded, card)
            if report is not None:
                counts = np.bincount(loaded.to_local_data().y.numpy(), minlength=10)
                report(f"{org}: {loaded.rows} rows, examples per class {counts.tolist()}")
    return DigitsConsortium(hub, org_dirs, x_test, y_test)


def register_environment(
    consortium: DigitsConsortium,
    org: str,
    physics: dict[str, float],
    name: str = "cartpole",
    license: str = "MIT",
    private_physics: bool = False,
) -> dict:
    """What `consortium environment add` does (the same functions): check the physics, publish the card,
    record it locally."""
    entry = prepare_environment(name, "CartPole-v1", physics, license, private_physics=private_physics)
    with consortium.org_client(org) as client:
        return actions.register_environment(client, consortium.org_dirs[org], entry)


def vote_as(org_dir: Path, hub_url: str, proposal_id: int, choice: str = "yes",
            reason: str = "", ca_file: Path | None = None) -> actions.VoteSubject | None:
    """What `consortium vote ID CHOICE --yes` does (the same function): read and check the proposal (for a
    project, its spec hash and test set), sign, send, record for the node."""
    with HubClient(hub_url, identity=load_org_identity(org_dir), ca_file=ca_file) as client:
        return actions.cast_vote(client, org_dir, proposal_id, choice, reason)


def approve_as(org_dir: Path, hub_url: str, project: dict, ca_file: Path | None = None) -> actions.VoteSubject | None:
    """Vote yes to run the project's current version (its ``run_project`` proposal, read afresh)."""
    with HubClient(hub_url, identity=load_org_identity(org_dir), ca_file=ca_file) as client:
        proposal_id = client.project(project["id"])["proposal_id"]
        return actions.cast_vote(client, org_dir, proposal_id, "yes")


def propose_and_approve(consortium: DigitsConsortium, spec: ProjectCreate, with_test_set: bool = True) -> dict:
    """Create the project as admin, attach the test set, and have every data owner vote yes to run it; the
    project as it stands then (its ``proposal_id`` is the passed proposal of this version)."""
    with consortium.hub.client() as admin:
        project = admin.create_project(spec)
        if with_test_set:
            admin.put_test_set(project["id"], consortium.test_set_bytes())
    for org in project["required_orgs"]:
        approve_as(consortium.org_dirs[org], consortium.hub.url, project, consortium.hub.ca_file)
    with consortium.hub.client() as admin:
        return admin.project(project["id"])


def trained_model(admin: HubClient, project_id: int, timeout: float = 240.0) -> int:
    """Start a run of the project, wait for it to complete (AssertionError when it fails or takes longer than
    ``timeout`` seconds), and return its model's id."""
    run = admin.start_run(project_id)
    deadline = time.monotonic() + timeout
    while admin.progress(run["id"], wait=5.0).run.status == "running":
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run['id']} did not finish within {timeout} s")
    finished = admin.run(run["id"])
    if finished["status"] != "completed":
        raise AssertionError(f"run {run['id']} ended {finished['status']}: {finished['error']}")
    return finished["model_id"]


def release_by_vote(consortium: DigitsConsortium, model_id: int, licence: str, voters: Sequence[str],
                    visibility: str = "members", download: bool = True, commercial: bool = False) -> dict:
    """The admin proposes to release the model under ``licence``; each of ``voters`` (the data owners, who
    hold a veto under the default policy) votes yes. The decided proposal."""
    with consortium.hub.client() as admin:
        proposal = admin.propose_release(model_id, licence, visibility=visibility, download=download,
                                         commercial=commercial, reason="share the model with the members")
    for org in voters:
        vote_as(consortium.org_dirs[org], consortium.hub.url, proposal["id"], "yes", f"{org} agrees",
                consortium.hub.ca_file)
    with consortium.hub.client() as admin:
        return admin.proposal(proposal["id"])


def digits_spec(name: str, orgs: Sequence[str], rounds: int, **overrides: Any) -> ProjectCreate:
    """The demo's project spec over the given orgs' ``digits`` datasets."""
    fields: dict[str, Any] = {
        "name": name,
        "task": "Classify 8x8 handwritten digits without pooling the organisations' data",
        "algorithm": {"name": "classifier", "hyperparameters": DIGITS_HYPERPARAMETERS},
        "strategy": {"name": "fedavg"},
        "datasets": [f"{org}/digits" for org in orgs],
        "rounds": rounds,
        "min_nodes": 2,
        "round_timeout": 60.0,
        "seed": 0,
    }
    fields.update(overrides)
    return ProjectCreate.model_validate(fields)
