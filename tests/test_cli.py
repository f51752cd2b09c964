"""The command line as a user runs it: clear errors that name the field, and the demo and bench entry points."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consortium.cli import app
from consortium.launch import start_hub
from consortium.scenario import ORGS, digits_spec, provision_digits

runner = CliRunner()


def consortium(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "consortium", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_dataset_add_names_a_missing_target_column(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    result = runner.invoke(app, ["dataset", "add", str(data), "--target", "label", "--license", "MIT",
                                 "--hub", "http://127.0.0.1:9", "--org-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "label" in result.output and "target" in result.output


def test_dataset_add_names_a_column_whose_type_differs_from_the_schema(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a,label\nx,0\ny,1\n")
    result = runner.invoke(app, ["dataset", "add", str(data), "--target", "label", "--license", "MIT",
                                 "--schema", "a:float64,label:int64", "--hub", "http://127.0.0.1:9",
                                 "--org-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "'a'" in result.output or " a " in result.output


def test_project_create_names_the_bad_field(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "p", "algorithm": {"name": "classifier"}, "datasets": ["a/b"],
                                "rounds": 0}))
    result = runner.invoke(app, ["project", "create", str(spec), "--hub", "http://127.0.0.1:9", "--token", "t"])
    assert result.exit_code == 2
    assert "rounds" in result.output


def test_ledger_verify_names_the_first_tampered_entry(tmp_path: Path) -> None:
    hub = start_hub(tmp_path / "hub")
    try:
        provision_digits(hub, tmp_path, ORGS[:2])
    finally:
        hub.stop()
    db = tmp_path / "hub" / "hub.db"
    ok = consortium("ledger", "verify", "--db", f"sqlite:///{db}")
    assert ok.returncode == 0, ok.stderr
    assert "ledger OK" in ok.stdout
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE ledger_entries SET payload = '{\"org\": \"mallory\"}' WHERE seq = 3")
    broken = consortium("ledger", "verify", "--db", f"sqlite:///{db}")
    assert broken.returncode == 1
    assert "entry 3" in broken.stderr


@pytest.mark.e2e
def test_project_approve_shows_hub_and_test_set_asks_and_records_them(tmp_path: Path) -> None:
    hub = start_hub(tmp_path / "hub")
    try:
        consortium_ = provision_digits(hub, tmp_path, ORGS[:2])
        with hub.client() as admin:
            project = admin.create_project(digits_spec("cli-approve", ORGS[:2], rounds=1))
            test_set = admin.put_test_set(project["id"], consortium_.test_set_bytes())["sha256"]
            hub_id = admin.health()["hub_id"]
        north, south = (consortium_.org_dirs[org] for org in ORGS[:2])
        approve = ["project", "approve", str(project["id"]), "--hub", hub.url, "--org-dir"]

        declined = runner.invoke(app, [*approve, str(north)], input="n\n")
        assert declined.exit_code == 1, declined.output
        assert f"hub              {hub_id}" in declined.output
        assert f"test set sha256  {test_set}" in declined.output
        assert f"spec sha256      {project['spec_hash']}" in declined.output
        assert not (north / "approvals.json").exists()

        signed = runner.invoke(app, [*approve, str(north)], input="y\n")
        assert signed.exit_code == 0, signed.output
        assert f"{ORGS[0]} approved project {project['id']} (hub {hub_id}" in signed.output
        assert json.loads((north / "approvals.json").read_text())[str(project["id"])] == {
            "spec_hash": project["spec_hash"], "test_set_sha256": test_set, "hub_id": hub_id}

        unasked = runner.invoke(app, [*approve, str(south), "--yes"])
        assert unasked.exit_code == 0, unasked.output
        with hub.client() as admin:
            shown = admin.project(project["id"])
        assert (shown["status"], shown["approved_orgs"]) == ("approved", sorted(ORGS[:2]))

        again = runner.invoke(app, [*approve, str(south), "--yes"])
        assert again.exit_code == 2 and "already approved" in again.output
    finally:
        hub.stop()


@pytest.mark.e2e
def test_demo_runs_end_to_end_with_exit_and_json(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    result = consortium("demo", "--exit", "--rounds", "4", "--workdir", str(tmp_path / "demo"),
                        "--json", str(summary_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["rounds"] == 4 and summary["ledger_ok"] is True
    assert summary["final_test_accuracy"] > 0.8
    assert Path(summary["model_card"]).exists()
    assert "final test accuracy" in result.stdout


@pytest.mark.e2e
def test_bench_deploy_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "deploy.json"
    result = consortium("bench", "deploy", "--rounds", "4", "--repeats", "1", "--json", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["nodes"] == 3 and data["rounds"] == 4
    assert data["median_round_overhead_ms"] > 0
