"""``model predict``: new raw rows checked by column, prepared with the card's fitted transform (a string
category column one-hot by its codes), then the model; the simulator's model directory is read like a
downloaded one."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from consortium.cli import app
from consortium.predict import Model, PredictError, predict
from consortium.sim.outputs import write_model
from consortium.sim.runner import simulate
from typer.testing import CliRunner

SITES = ("north", "south", "east")


def _table(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    site = rng.choice(SITES, rows)
    dose = rng.normal(500.0, 100.0, rows)
    age = rng.normal(50.0, 10.0, rows)
    label = ((dose > 500.0) ^ (site == "east")).astype(int)
    return pd.DataFrame({"age": age, "site": site, "dose": dose, "label": label})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("predict")
    _table(600, 0).to_csv(work / "train.csv", index=False)
    spec = {"name": "sites", "rounds": 15, "seed": 0, "validation_fraction": 0.0,
            "algorithm": {"name": "classifier", "hyperparameters": {
                "layers": [5, 16, 2], "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "local_epochs": 2,
                "batch_size": 32}},
            "preprocessing": {"scale": "standardise", "categorical": ["site"]},
            "simulation": {"dataset": f"file:{work / 'train.csv'}", "target": "label", "clients": 3,
                           "partition": "iid"}}
    result = simulate(spec)
    write_model(work / "model", result, "vectorized")
    return work / "model"


def test_the_card_keeps_the_string_categories_and_predict_applies_them(model_dir):
    model = Model.load(model_dir)
    (site,) = model.card["preprocessing"]["one_hot"]
    assert site["name"] == "site" and sorted(site["labels"]) == sorted(SITES)
    new = _table(300, 1)
    out = predict(model, new, ignore=["label"])
    assert list(out.columns) == ["prediction", "probability_0", "probability_1"]
    assert np.allclose(out[["probability_0", "probability_1"]].sum(axis=1), 1.0)
    assert float((out["prediction"] == new["label"]).mean()) > 0.9
    shuffled = new[["dose", "label", "site", "age"]]
    assert out.equals(predict(model, shuffled, ignore=["label"]))


def test_bad_rows_are_refused_naming_the_column(model_dir):
    model = Model.load(model_dir)
    new = _table(20, 2).drop(columns=["label"])
    with pytest.raises(PredictError, match="column\\(s\\) 'dose' missing"):
        predict(model, new.drop(columns=["dose"]))
    with pytest.raises(PredictError, match="column\\(s\\) 'id' not used by the model"):
        predict(model, new.assign(id=range(20)))
    with pytest.raises(PredictError, match="--ignore: column\\(s\\) label are not in the rows"):
        predict(model, new, ignore=["label"])
    with pytest.raises(PredictError, match="column 'age' is not numeric \\(e.g. 'old' in row 3\\)"):
        predict(model, new.assign(age=[1.0, 2.0, "old"] + [3.0] * 17))
    unseen = new.assign(site=["west"] + list(new["site"][1:]))
    with pytest.raises(PredictError, match="column 'site' has categories the model never saw in training: 'west'"):
        predict(model, unseen)
    assert len(predict(model, unseen, allow_unseen=True)) == 20
    with pytest.raises(PredictError, match="feature 'age' has missing values"):
        predict(model, new.assign(age=[np.nan] + [1.0] * 19))
    with pytest.raises(PredictError, match="no model_card.json or model.safetensors"):
        Model.load(model_dir.parent)


def test_model_predict_command_writes_csv_or_json(model_dir, tmp_path):
    rows = tmp_path / "new.csv"
    _table(10, 3).to_csv(rows, index=False)
    runner = CliRunner()
    result = runner.invoke(app, ["model", "predict", str(model_dir), "--rows", str(rows), "--ignore", "label",
                                 "--out", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "p.json").read_text())
    assert len(records) == 10 and set(records[0]) == {"prediction", "probability_0", "probability_1"}
    result = runner.invoke(app, ["model", "predict", str(model_dir), "--rows", str(rows)])
    assert result.exit_code == 2 and "'label' not used by the model" in result.output
    result = runner.invoke(app, ["model", "predict", "7", "--rows", str(rows)])
    assert result.exit_code == 2 and "give --hub" in result.output
