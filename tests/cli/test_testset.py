"""``testset make`` with string categories: the rows become codes (as on the nodes), and a spec whose
preprocessing names a column the table lacks is refused naming it."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from consortium.cli import app
from consortium.codec import decode_tensors
from consortium.fl.categories import code_of


def _spec(tmp_path, categorical: list[str]):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({
        "name": "p", "datasets": ["a/d", "b/d"], "rounds": 1,
        "algorithm": {"name": "classifier", "hyperparameters": {"layers": [4, 2]}},
        "preprocessing": {"scale": "standardise", "categorical": categorical}}))
    return path


def test_a_string_category_test_set_is_written_as_codes_and_checked_against_the_spec(tmp_path):
    table = tmp_path / "held-out.csv"
    pd.DataFrame({"age": [50.0, 61.0, 70.0], "ward": ["north", "south", "east"], "y": [0, 1, 1]}).to_csv(
        table, index=False)
    runner = CliRunner()
    result = runner.invoke(app, ["testset", "make", str(table), "--target", "y", "--categorical", "ward",
                                 "--spec", str(_spec(tmp_path, ["ward"]))])
    assert result.exit_code == 0, result.output
    assert "not checked here" in result.output
    x = decode_tensors((tmp_path / "held-out.testset.safetensors").read_bytes())["x"]
    assert x[:, 1].tolist() == [code_of("north"), code_of("south"), code_of("east")]
    result = runner.invoke(app, ["testset", "make", str(table), "--target", "y", "--categorical", "ward",
                                 "--spec", str(_spec(tmp_path, ["site"]))])
    assert result.exit_code == 2 and "unknown feature column(s) ['site']" in result.output
