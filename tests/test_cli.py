"""The command line as a user runs it: clear errors that name the field, and the demo and bench entry points."""

from __future__ import annotations

import json
import os
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


def consortium(*args: str, timeout: float = 300, columns: int | None = None) -> subprocess.CompletedProcess:
    env = None if columns is None else {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "consortium", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


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


@pytest.mark.parametrize(("flags", "expected"), [
    (["--budget-epsilon", "2"], "--budget-epsilon and --budget-delta go together"),
    (["--budget-epsilon", "0", "--budget-delta", "1e-5"], "privacy_budget.epsilon"),
    (["--budget-epsilon", "2", "--budget-delta", "1"], "privacy_budget.delta"),
])
def test_dataset_add_checks_the_privacy_budget_before_the_hub(tmp_path: Path, flags: list[str],
                                                              expected: str) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a,label\n1.0,0\n2.0,1\n")
    result = runner.invoke(app, ["dataset", "add", str(data), "--target", "label", "--license", "MIT", *flags,
                                 "--hub", "http://127.0.0.1:9", "--org-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split())


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
def test_vote_shows_what_it_signs_asks_and_records_a_yes(tmp_path: Path) -> None:
    hub = start_hub(tmp_path / "hub")
    try:
        consortium_ = provision_digits(hub, tmp_path, ORGS[:2])
        with hub.client() as admin:
            project = admin.create_project(digits_spec("cli-vote", ORGS[:2], rounds=1))
            test_set = admin.put_test_set(project["id"], consortium_.test_set_bytes())["sha256"]
            hub_id = admin.health()["hub_id"]
            proposal = admin.proposal(admin.project(project["id"])["proposal_id"])
        north, south = (consortium_.org_dirs[org] for org in ORGS[:2])
        pid = proposal["id"]
        vote = ["vote", str(pid), "yes", "--hub", hub.url, "--org-dir"]

        declined = runner.invoke(app, [*vote, str(north)], input="n\n")
        assert declined.exit_code == 1, declined.output
        assert f"proposal {pid} (run_project, open) on hub {hub_id}" in declined.output
        assert f"content sha256   {proposal['content_hash']} (recomputed here)" in declined.output
        assert test_set in declined.output and project["spec_hash"] in declined.output
        assert f"Sign a 'yes' vote for {ORGS[0]}?" in declined.output
        assert "no vote: nothing was signed" in declined.output
        assert not (north / "votes.json").exists()
        with hub.client() as admin:
            assert admin.proposal(pid)["votes"] == []

        signed = runner.invoke(app, [*vote, str(north), "--reason", "fair use of our share"], input="y\n")
        assert signed.exit_code == 0, signed.output
        assert f"{ORGS[0]} voted yes on proposal {pid}" in signed.output
        assert json.loads((north / "votes.json").read_text())[str(project["id"])] == {
            "spec_hash": project["spec_hash"], "test_set_sha256": test_set, "hub_id": hub_id,
            "proposal_id": pid, "content_hash": proposal["content_hash"]}

        unasked = runner.invoke(app, [*vote, str(south), "--yes"])
        assert unasked.exit_code == 0, unasked.output
        assert "Sign a" not in unasked.output
        with hub.client() as admin:
            shown, decided = admin.project(project["id"]), admin.proposal(pid)
        assert (shown["status"], shown["approved_orgs"]) == ("approved", sorted(ORGS[:2]))
        assert decided["status"] == "passed"
        assert [(v["org"], v["choice"], v["reason"]) for v in decided["votes"]] == [
            (ORGS[0], "yes", "fair use of our share"), (ORGS[1], "yes", "")]

        again = runner.invoke(app, [*vote, str(south), "--yes"])
        assert again.exit_code == 2, again.output
        told = " ".join(again.output.split())
        assert f"proposal {pid} is passed: it takes no more votes (HTTP 409)" in told

        # A wide terminal, so that the table shows whole names and tallies.
        listed = consortium("proposal", "list", "--hub", hub.url, "--org-dir", str(north), columns=240)
        assert listed.returncode == 0, listed.stderr
        rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in listed.stdout.splitlines()
                if line.startswith("│")]
        by_id = {int(row[0]): row[1:6] for row in rows}
        assert by_id[pid] == ["run_project", "cli-vote", "passed", f"{ORGS[0]}:yes, {ORGS[1]}:yes", "-"]
        assert by_id[project["proposal_id"]][:3] == ["run_project", "cli-vote", "withdrawn"]
        admitted = [row for row in by_id.values() if row[0] == "admit_org"]
        assert [(row[1], row[2]) for row in admitted] == [(ORGS[0], "passed"), (ORGS[1], "passed")]
        only_open = consortium("proposal", "list", "--status", "open", "--hub", hub.url, "--token",
                               hub.admin_token, columns=240)
        assert only_open.returncode == 0 and "cli-vote" not in only_open.stdout, only_open.stdout

        shown_cli = runner.invoke(app, ["proposal", "show", str(pid), "--hub", hub.url, "--token",
                                        hub.admin_token])
        assert shown_cli.exit_code == 0, shown_cli.output
        document = json.loads(shown_cli.output)
        assert (document["id"], document["status"], document["content_hash"]) == (
            pid, "passed", proposal["content_hash"])
        assert document["outcome"]["votes"] == {ORGS[0]: "yes", ORGS[1]: "yes"}
        missing = runner.invoke(app, ["proposal", "show", "999999", "--hub", hub.url, "--token",
                                      hub.admin_token])
        assert missing.exit_code == 2 and "no proposal 999999 (HTTP 404)" in missing.output
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
    assert (summary["model_status"], summary["model_licence"]) == ("released", "CC-BY-4.0")
    assert summary["obligations"] == {"attribution": sorted(f"{org}/digits (CC-BY-4.0)" for org in ORGS)}
    assert json.loads(Path(summary["model_card"]).read_text())["release"]["proposal_id"] == summary[
        "release_proposal_id"]
    assert "final test accuracy" in result.stdout


@pytest.mark.e2e
def test_bench_deploy_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "deploy.json"
    result = consortium("bench", "deploy", "--rounds", "4", "--repeats", "1", "--json", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["nodes"] == 3 and data["rounds"] == 4
    assert data["median_round_overhead_ms"] > 0


AUDIT_SPEC = {
    "name": "audit-card",
    "algorithm": {"name": "classifier", "hyperparameters": {"layers": [64, 16, 10], "optimizer": "sgd", "lr": 0.1,
                                                            "local_epochs": 1, "batch_size": 32}},
    "strategy": {"name": "fedavg"},
    "rounds": 2,
    "seed": 0,
    "privacy": {"noise": "central", "clip": 0.5, "epsilon": 4.0, "delta": 1e-5},
    "simulation": {"dataset": "digits", "clients": 4, "partition": "iid", "cohort": 1.0},
}


def test_audit_dp_reads_the_spec_and_lands_in_the_model_card(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(AUDIT_SPEC))
    out = tmp_path / "out"
    assert runner.invoke(app, ["sim", "run", str(spec), "--out", str(out)]).exit_code == 0
    result = runner.invoke(app, ["audit", "dp", str(spec), "--canaries", "20", "--guesses", "5",
                                 "--model-card", str(out)])
    assert result.exit_code == 0, result.output
    card = json.loads((out / "model_card.json").read_text())
    audit = card["privacy"]["audit"]["dp"]
    assert audit["m"] == 20 and audit["k"] == 5 and audit["epsilon_claimed"] <= 4.0 * (1 + 1e-6)
    assert audit["epsilon_lower"] <= audit["epsilon_claimed"] and "date" in audit
    assert card["privacy"]["per_dataset"]  # the run's own guarantee stays
    assert "One-run DP audit" in (out / "MODEL_CARD.md").read_text()


def test_audit_dp_without_privacy_in_the_spec_asks_for_a_flag(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({k: v for k, v in AUDIT_SPEC.items() if k != "privacy"}))
    result = runner.invoke(app, ["audit", "dp", str(spec), "--canaries", "20", "--guesses", "5"])
    assert result.exit_code == 2
    assert "--noise-multiplier" in result.output and "privacy" in result.output


def test_audit_mia_lands_in_a_card_without_dp(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({k: v for k, v in AUDIT_SPEC.items() if k != "privacy"}))
    out = tmp_path / "out"
    assert runner.invoke(app, ["sim", "run", str(spec), "--out", str(out)]).exit_code == 0
    result = runner.invoke(app, ["audit", "mia", str(spec), "--model-card", str(out / "model_card.json")])
    assert result.exit_code == 0, result.output
    mia = json.loads((out / "model_card.json").read_text())["privacy"]["audit"]["mia"]
    assert 0 <= mia["loss_threshold"]["auc"] <= 1 and "date" in mia
    assert "Membership inference" in (out / "MODEL_CARD.md").read_text()
