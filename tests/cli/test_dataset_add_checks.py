"""``consortium dataset add`` checks the data as training would, before anything reaches the hub or the
org's registry; ``dataset list`` prints whole names and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consortium.cli import app
from consortium.launch import start_hub
from consortium.node.registry import LocalRegistry
from consortium.scenario import ORGS, provision_digits

runner = CliRunner()
NO_HUB = ["--hub", "http://127.0.0.1:9"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A hub with one org and its ``digits`` dataset."""
    workdir = tmp_path_factory.mktemp("hub")
    process = start_hub(workdir / "hub")
    try:
        process.org_dir = provision_digits(process, workdir, ORGS[:1]).org_dirs[ORGS[0]]
        yield process
    finally:
        process.stop()


def add(tmp_path: Path, text: str, *flags: str, name: str = "d.csv") -> tuple[int, str]:
    data = tmp_path / name
    data.write_text(text)
    result = runner.invoke(app, ["dataset", "add", str(data), "--license", "MIT", *NO_HUB,
                                 "--org-dir", str(tmp_path), *flags])
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize(("text", "flags", "expected"), [
    ("a,label\n1.0,0\nfoo,1\n", ["--target", "label"],
     "feature column 'a' is a string; encode it numerically or declare it categorical (--categorical a)"),
    ("a,b,label\n1.0,2,0\n,3,1\n", ["--target", "label"],
     "feature column 'a' has 1 missing value(s) (empty cells or NaN), first in row 2"),
    ("a,label\n1.0,0\n2.0,\n", ["--target", "label"],
     "target column 'label' has 1 missing value(s) (empty cells or NaN), first in row 2"),
    ("a,label\n1.0,\n2.0,\n", ["--target", "label"], "target column 'label' has 2 missing value(s)"),
    ("a,label\n1.0,yes\n2.0,no\n", ["--target", "label"], "target column 'label' is a string"),
    ("a,b\n1.0,0\n", ["--target", "label"], "target column 'label' not in file"),
    ("", ["--target", "label"], "d.csv: the file is empty"),
    ("ward,a,label\nx,1.0,0\n,2.0,1\n", ["--target", "label", "--categorical", "ward"],
     "feature column 'ward' has 1 missing value(s)"),
    ("ward,a,label\nx,1.0,0\ny,2.0,1\n", ["--target", "label", "--categorical", "label"],
     "categorical column(s) 'label' are not feature columns"),
])
def test_bad_data_is_refused_before_the_hub_with_the_column_and_row(tmp_path: Path, text: str,
                                                                    flags: list[str], expected: str) -> None:
    code, output = add(tmp_path, text, *flags)
    assert code == 2 and expected in output, output
    assert "cannot reach the hub" not in output
    assert LocalRegistry(tmp_path).all() == []


def test_a_file_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    code, output = add(tmp_path, "a\tb\n", "--target", "b", name="d.txt")
    assert code == 2 and "unsupported file type '.txt'; use .csv, .parquet or .npz" in output


def test_a_declared_categorical_string_column_is_registered_with_its_declaration(tmp_path: Path, hub) -> None:
    data = tmp_path / "wards.csv"
    data.write_text("ward,a,label\nx,1.0,0\ny,2.0,1\n")
    result = runner.invoke(app, ["dataset", "add", str(data), "--license", "MIT", "--target", "label",
                                 "--categorical", "ward", "--hub", hub.url, "--org-dir", str(hub.org_dir)])
    assert result.exit_code == 0, result.output
    assert "wards" in LocalRegistry(hub.org_dir)
    listed = runner.invoke(app, ["dataset", "list", "--hub", hub.url, "--token", hub.admin_token, "--json"])
    (card,) = [r for r in json.loads(listed.output) if r["name"] == "wards"]
    assert card["schema"]["categorical"] == ["ward"]


def test_dataset_add_before_enrolment_says_to_enrol_first(tmp_path: Path, hub) -> None:
    assert runner.invoke(app, ["org", "init", "lonely", "--dir", str(tmp_path)]).exit_code == 0
    data = tmp_path / "d.csv"
    data.write_text("a,label\n1.0,0\n2.0,1\n")
    result = runner.invoke(app, ["dataset", "add", str(data), "--license", "MIT", "--target", "label",
                                 "--hub", hub.url, "--org-dir", str(tmp_path / "lonely")])
    output = " ".join(result.output.split())
    assert result.exit_code == 2 and "enrol this org first" in output, output


def test_dataset_list_prints_whole_names_and_json(hub) -> None:
    token = hub.admin_token
    table = runner.invoke(app, ["dataset", "list", "--hub", hub.url, "--token", token], env={"COLUMNS": "80"})
    assert "north-clinic/digits" in table.output
    listed = runner.invoke(app, ["dataset", "list", "--hub", hub.url, "--token", token, "--json"])
    rows = json.loads(listed.output)
    assert {f"{r['org']}/{r['name']}" for r in rows} >= {"north-clinic/digits"}


def test_the_hub_log_names_its_url(hub) -> None:
    assert f"hub serving {hub.url}" in hub.log_path.read_text(errors="replace")


def test_a_long_dataset_name_is_listed_whole_at_80_columns(tmp_path: Path, hub) -> None:
    name = "a-rather-long-dataset-name-from-the-cardiology-ward-2026"
    data = tmp_path / "long.csv"
    data.write_text("a,label\n1.0,0\n2.0,1\n")
    added = runner.invoke(app, ["dataset", "add", str(data), "--name", name, "--license", "MIT", "--target",
                                "label", "--hub", hub.url, "--org-dir", str(hub.org_dir)])
    assert added.exit_code == 0, added.output
    table = runner.invoke(app, ["dataset", "list", "--hub", hub.url, "--token", hub.admin_token],
                          env={"COLUMNS": "80"})
    assert f"{ORGS[0]}/{name}" in table.output, table.output


def test_empty_feature_cells_are_accepted_for_a_project_that_imputes_them(tmp_path: Path) -> None:
    from consortium.node.actions import prepare_dataset
    from consortium.tables import DatasetError

    file = tmp_path / "gaps.csv"
    file.write_text("a,b,label\n1.0,,0\n2.0,3.0,1\n")
    with pytest.raises(DatasetError, match="column 'b' has 1 missing value"):
        prepare_dataset(file, "gaps", "CC0-1.0", target="label")
    loaded, card = prepare_dataset(file, "gaps", "CC0-1.0", target="label", allow_missing=True)
    assert loaded.rows == 2 and card.rows == 2
    (tmp_path / "no-label.csv").write_text("a,b,label\n1.0,2.0,\n2.0,3.0,1\n")
    with pytest.raises(DatasetError, match="target column 'label'"):
        prepare_dataset(tmp_path / "no-label.csv", "x", "CC0-1.0", target="label", allow_missing=True)
