"""``consortium example csv-shares``: the shares are the simulator's clients for the same settings, with raw
columns; the test split with and without its label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from consortium.cli import app
from consortium.fl.core import FLError
from consortium.sim.datasets import load_dataset
from consortium.sim.shares import write_csv_shares
from consortium.sim.simulation import client_parts
from consortium.sim.spec import SimulationSettings


def test_the_shares_are_the_simulators_clients_with_raw_columns(tmp_path):
    paths = write_csv_shares("breast_cancer", 4, tmp_path, target="diagnosis")
    data = load_dataset("breast_cancer", raw=True)
    settings = SimulationSettings(dataset="breast_cancer", clients=4, partition="dirichlet:1.0", partition_seed=42)
    parts = client_parts(data, settings)
    sizes = []
    for i, part in enumerate(parts, start=1):
        share = pd.read_csv(paths[f"share-{i}"])
        assert list(share.columns) == [*data.feature_names, "diagnosis"]
        expected = data.train.x[torch.from_numpy(part)].numpy()
        assert np.array_equal(share[list(data.feature_names)].to_numpy(dtype=np.float32), expected)
        assert share["diagnosis"].tolist() == data.train.y[torch.from_numpy(part)].tolist()
        sizes.append(len(share))
    assert len(set(sizes)) == 4 and sum(sizes) == len(data.train)
    test, new = pd.read_csv(paths["test"]), pd.read_csv(paths["new"])
    assert len(test) == len(new) == len(data.test) and "diagnosis" not in new.columns
    assert test["mean area"].max() > 1000, "raw columns, not standardised"


def test_impossible_shares_are_refused_with_the_reason(tmp_path):
    with pytest.raises(FLError, match="already a feature column"):
        write_csv_shares("breast_cancer", 2, tmp_path, target="mean radius")
    with pytest.raises(FLError, match=r"num_clients \(200\) exceeds the number of samples \(120\)"):
        write_csv_shares("iris", 200, tmp_path)
    result = CliRunner().invoke(app, ["example", "csv-shares", "--dataset", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown dataset 'nope'" in result.output
