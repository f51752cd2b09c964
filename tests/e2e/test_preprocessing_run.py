"""Federated preprocessing end to end: four real nodes on uneven CSV shares of scikit-learn's breast cancer
data with raw columns, a spec that standardises them; the result matches centralised logistic regression on
standardised data and the simulator on the same shares, and the card shows the majority-class baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from consortium.client import HubClient
from consortium.launch import provision_org, start_hub, start_node
from consortium.model_files import download_model
from consortium.node import actions
from consortium.protocol import ProjectCreate
from consortium.scenario import DigitsConsortium, propose_and_approve
from consortium.sim.datasets import load_dataset
from consortium.sim.runner import simulate
from consortium.sim.simulation import client_parts
from consortium.sim.spec import parse_spec
from test_federated_run import wait_run

pytestmark = pytest.mark.e2e

ORGS = ("north-clinic", "south-lab", "east-institute", "west-hospital")
SIMULATION = {"dataset": "breast_cancer", "clients": 4, "partition": "dirichlet:1.0", "partition_seed": 42}
SPEC = {
    "name": "bc-standardised", "rounds": 20, "seed": 0, "validation_fraction": 0.0,
    "algorithm": {"name": "classifier", "hyperparameters": {
        "layers": [30, 2], "optimizer": "sgd", "lr": 0.05, "local_epochs": 2, "batch_size": 32}},
    "preprocessing": {"scale": "standardise"},
}


def _write_shares(workdir: Path) -> tuple[dict[str, Path], object]:
    """Each org's CSV: its share (the simulator's partition of the same training rows), raw columns."""
    data = load_dataset("breast_cancer", raw=True)
    _, settings = parse_spec({**SPEC, "datasets": ["x/y"], "simulation": SIMULATION})
    parts = client_parts(data, settings)
    paths = {}
    for org, idx in zip(ORGS, parts, strict=True):
        frame = pd.DataFrame(data.train.x[torch.from_numpy(idx)].double().numpy(),
                             columns=list(data.feature_names))
        frame["diagnosis"] = data.train.y[torch.from_numpy(idx)].numpy()
        paths[org] = workdir / "data" / f"{org}.csv"
        paths[org].parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(paths[org], index=False)
    return paths, data


def _centralised_standardised(data) -> float:
    scaler = StandardScaler().fit(data.train.x.double().numpy())
    model = LogisticRegression(max_iter=5000).fit(scaler.transform(data.train.x.double().numpy()),
                                                  data.train.y.numpy())
    return float(model.score(scaler.transform(data.test.x.double().numpy()), data.test.y.numpy()))


def test_four_nodes_standardise_raw_columns_like_the_simulator_and_centralised_training(db_url, tmp_path):
    torch.set_num_threads(1)
    csvs, data = _write_shares(tmp_path)
    sizes = sorted(len(pd.read_csv(p)) for p in csvs.values())
    assert sizes[0] < sizes[-1], "the shares should be uneven"
    hub = start_hub(tmp_path / "hub", db_url=db_url)
    nodes = []
    try:
        org_dirs = {org: tmp_path / "orgs" / org for org in ORGS}
        with hub.client() as admin:
            for i, org in enumerate(ORGS):
                identity = provision_org(admin, hub.url, org_dirs[org], org,
                                         voters={member: org_dirs[member] for member in ORGS[:i]})
                loaded, card = actions.prepare_dataset(csvs[org], "breast-cancer", "CC-BY-4.0", target="diagnosis")
                with HubClient(hub.url, identity=identity) as client:
                    actions.register_dataset(client, org_dirs[org], loaded, card)
        consortium = DigitsConsortium(hub, org_dirs, data.test.x.numpy(), data.test.y.numpy())
        spec = ProjectCreate.model_validate({**SPEC, "datasets": [f"{org}/breast-cancer" for org in ORGS]})
        project = propose_and_approve(consortium, spec)
        nodes = [start_node(hub.url, org_dirs[org], poll_wait=10.0) for org in ORGS]
        with hub.client() as admin:
            admin.wait_online(list(ORGS))
            progress = wait_run(admin, admin.start_run(project["id"])["id"])
            logs = hub.log_tail(60) + "".join(n.log_tail(20) for n in nodes)
            assert progress.run.status == "completed", logs
            paths = download_model(admin, progress.run.model_id, tmp_path / "model")
            ledger = admin.ledger()
    finally:
        for node in nodes:
            node.stop()
        hub.stop()

    real = progress.rounds[-1].test["accuracy"]
    central = _centralised_standardised(data)
    simulated = simulate({**SPEC, "simulation": SIMULATION}).final_metrics["accuracy"]
    print(f"accuracy: real {real:.4f}, simulated {simulated:.4f}, centralised standardised {central:.4f}")
    assert abs(real - central) <= 0.02
    assert abs(real - simulated) <= 0.01

    card = json.loads(paths["card"].read_text())
    majority = card["baseline"]["majority_class"]
    assert majority == {"label": 1, "accuracy": pytest.approx(72 / 114), "examples": 114}
    assert card["warnings"] == [] and progress.warnings == []
    assert progress.rounds[-1].baseline["accuracy"] == pytest.approx(72 / 114)
    fitted = card["preprocessing"]
    raw = data.train.x.double().numpy()
    assert fitted["rows"] == len(raw)
    assert np.allclose(fitted["shift"], raw.mean(axis=0), rtol=1e-6)
    assert np.allclose(fitted["scale"], raw.std(axis=0), rtol=1e-4)
    assert "**Baseline**" in paths["card_markdown"].read_text()
    assert any(e["event_type"] == "run.preprocessing" for e in ledger)
