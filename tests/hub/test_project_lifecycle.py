"""A project as a user meets it: proposed with its test set in one request (a refused test set leaves nothing),
listed, withdrawn by its proposer; test sets made from a table and checked with errors that say what is
wrong. Real hub process."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from consortium.cli import app as cli
from consortium.client import HubError
from consortium.codec import encode_tensors
from consortium.launch import start_hub
from consortium.scenario import ORGS, DigitsConsortium, digits_spec, provision_digits
from consortium.test_sets import TestSetError

pytestmark = pytest.mark.e2e
runner = CliRunner()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DigitsConsortium]:
    workdir = tmp_path_factory.mktemp("lifecycle")
    hub = start_hub(workdir / "hub")
    try:
        yield provision_digits(hub, workdir, ORGS[:2])
    finally:
        hub.stop()


def names(env: DigitsConsortium) -> set[str]:
    with env.hub.client() as admin:
        return {p["name"] for p in admin.projects()}


def ledger_size(env: DigitsConsortium) -> int:
    with env.hub.client() as admin:
        return len(admin.ledger(limit=10_000))


@pytest.mark.parametrize(("test_set", "fragment"), [
    (lambda env: encode_tensors({"x": torch.zeros(4, 10), "y": torch.zeros(4, dtype=torch.int64)}),
     "test set x has 10 features per row, the project's datasets have 64"),
    (lambda env: encode_tensors({"x": torch.zeros(4, 64, dtype=torch.float64), "y": torch.zeros(4)}),
     "test set x is float64, it must be float32"),
    (lambda env: encode_tensors({"x": torch.zeros(4, 64), "y": torch.zeros(3)}),
     "test set y must be a vector of 4 labels"),
    (lambda env: encode_tensors({"x": torch.zeros(4, 64)}), "exactly the tensors 'x' and 'y'"),
])
def test_a_refused_test_set_leaves_no_project_and_the_retry_succeeds(env, test_set, fragment) -> None:
    name = f"retry-{hashlib.sha256(fragment.encode()).hexdigest()[:8]}"
    spec = digits_spec(name, ORGS[:2], rounds=1)
    before = ledger_size(env)
    with env.hub.client() as admin:
        with pytest.raises(HubError) as info:
            admin.create_project(spec, test_set(env))
        assert info.value.status_code == 422 and fragment in info.value.detail, info.value.detail
        assert name not in names(env) and ledger_size(env) == before
        assert admin.create_project(spec, env.test_set_bytes())["name"] == name


def test_a_csv_given_as_test_set_is_named_as_such_before_anything_is_sent(env) -> None:
    with env.hub.client() as admin, pytest.raises(TestSetError, match="the test set is a CSV file"):
        admin.create_project(digits_spec("csv-test-set", ORGS[:2], rounds=1), b"p0,p1,label\n0.1,0.2,3\n")
    assert "csv-test-set" not in names(env)


def test_a_project_proposed_with_its_test_set_binds_it_in_its_proposal(env) -> None:
    good = env.test_set_bytes()
    with env.hub.client() as admin:
        project = admin.create_project(digits_spec("bound", ORGS[:2], rounds=1), good)
        proposal = admin.proposal(project["proposal_id"])
        entries = [e for e in admin.ledger(limit=10_000) if e["event_type"] == "project.proposed"]
    assert project["test_set_sha256"] == hashlib.sha256(good).hexdigest()
    assert proposal["subject"]["test_set_sha256"] == project["test_set_sha256"]
    assert entries[-1]["payload"]["test_set_sha256"] == project["test_set_sha256"]


def test_the_proposer_withdraws_a_project_that_has_not_run(env) -> None:
    with env.hub.client() as admin:
        project = admin.create_project(digits_spec("to-withdraw", ORGS[:2], rounds=1))
    with env.org_client(ORGS[0]) as north, pytest.raises(HubError) as other:
        north.withdraw_project(project["id"])
    assert other.value.status_code == 403 and "only the proposer" in other.value.detail
    with env.hub.client() as admin:
        withdrawn = admin.withdraw_project(project["id"], "wrong rounds")
        assert withdrawn["status"] == "withdrawn"
        assert admin.proposal(project["proposal_id"])["status"] == "withdrawn"
        entry = [e for e in admin.ledger(limit=10_000) if e["event_type"] == "project.withdrawn"][-1]
        assert entry["payload"] == {"project_id": project["id"], "project": "to-withdraw", "reason": "wrong rounds"}
        for attempt, fragment in [(lambda: admin.withdraw_project(project["id"]), "already withdrawn"),
                                  (lambda: admin.put_test_set(project["id"], env.test_set_bytes()), "was withdrawn"),
                                  (lambda: admin.start_run(project["id"]), "cannot run")]:
            with pytest.raises(HubError) as info:
                attempt()
            assert info.value.status_code == 409 and fragment in info.value.detail, info.value.detail
        with pytest.raises(HubError) as again:
            admin.create_project(digits_spec("to-withdraw", ORGS[:2], rounds=1))
    assert again.value.status_code == 409 and "withdrawn" in again.value.detail


def test_project_list_and_withdraw_on_the_command_line(env) -> None:
    with env.hub.client() as admin:
        project = admin.create_project(digits_spec("cli-listed", ORGS[:2], rounds=1))
    common = ["--hub", env.hub.url, "--token", env.hub.admin_token]
    listed = runner.invoke(cli, ["project", "list", *common, "--json"])
    assert listed.exit_code == 0 and "cli-listed" in {p["name"] for p in json.loads(listed.output)}
    table = runner.invoke(cli, ["project", "list", *common], env={"COLUMNS": "200"})
    assert "cli-listed" in table.output and "proposed" in table.output
    withdrawn = runner.invoke(cli, ["project", "withdraw", str(project["id"]), *common, "--reason", "oops"])
    assert withdrawn.exit_code == 0 and "withdrawn" in withdrawn.output


def write_table(env: DigitsConsortium, path: Path, width: int = 64) -> None:
    frame = pd.DataFrame(env.x_test[:, :width].astype("float64"), columns=[f"p{i}" for i in range(width)])
    frame["label"] = env.y_test
    frame.to_csv(path, index=False)


def test_testset_make_writes_what_create_accepts_and_names_a_misfit(env, tmp_path: Path) -> None:
    spec = digits_spec("made-test-set", ORGS[:2], rounds=1)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    write_table(env, tmp_path / "held-out.csv")
    made = runner.invoke(cli, ["testset", "make", str(tmp_path / "held-out.csv"), "--target", "label",
                               "--spec", str(spec_file)])
    assert made.exit_code == 0, made.output
    out = tmp_path / "held-out.testset.safetensors"
    created = runner.invoke(cli, ["project", "create", str(spec_file), "--test-set", str(out),
                                  "--hub", env.hub.url, "--token", env.hub.admin_token])
    assert created.exit_code == 0, created.output
    with env.hub.client() as admin:
        (project,) = [p for p in admin.projects() if p["name"] == "made-test-set"]
    assert project["test_set_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()

    write_table(env, tmp_path / "narrow.csv", width=10)
    misfit = runner.invoke(cli, ["testset", "make", str(tmp_path / "narrow.csv"), "--target", "label",
                                 "--spec", str(spec_file)])
    assert misfit.exit_code == 2
    assert "the first layer width (64) must equal the number of input features" in " ".join(misfit.output.split())
    bad_labels = tmp_path / "labels.csv"
    write_table(env, bad_labels)
    pd.read_csv(bad_labels).assign(label=lambda f: f["label"] + 10).to_csv(bad_labels, index=False)
    wrong = runner.invoke(cli, ["testset", "make", str(bad_labels), "--target", "label", "--spec", str(spec_file)])
    assert wrong.exit_code == 2 and "labels must lie in [0, 10)" in " ".join(wrong.output.split())
    csv_as_test_set = runner.invoke(cli, ["project", "create", str(spec_file), "--test-set", str(bad_labels),
                                          "--hub", env.hub.url, "--token", env.hub.admin_token])
    assert csv_as_test_set.exit_code == 2 and "the test set is a CSV file" in " ".join(csv_as_test_set.output.split())
