"""The anonymisation gate and DP synthetic data end to end: a real hub, north's key and the ``consortium
dataset`` CLI. The node reads k and l from the consortium policy (a looser --k does not loosen it, a voted
change raises it) and refuses a table below them; the hub refuses a publish whose report is below the policy's k (422 naming the
measured k and the columns at fault; nothing published, no staged file left) and records an accepted report
in the ledger. DP synthetic data is charged to the dataset's privacy budget (on the node and the hub),
marked synthetic with its epsilon in the version and the datasheet, and refused when it would overspend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from consortium.launch import child_env
from consortium.node import open_data
from consortium.open_data_wire import Datasheet
from consortium.scenario import ORGS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
NORTH = ORGS[0]
QUASI = "age,postcode,sex"
SHEET = {key: f"{key} of the patients table (test)" for key in Datasheet.model_fields}


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in child_env().items() if k not in ("CONSORTIUM_TOKEN", "CONSORTIUM_HUB")}
    return subprocess.run([sys.executable, "-m", "consortium", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def categorical(*columns: str) -> list[str]:
    return [arg for column in columns for arg in ("--categorical", column)]


def people(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"name": [f"patient {i}" for i in range(n)], "age": rng.integers(18, 90, n),
                         "postcode": rng.choice([f"AB{i}" for i in range(1, 9)], n), "sex": rng.choice(["F", "M"], n),
                         "diagnosis": rng.choice(["flu", "asthma", "none", "migraine"], n)})


def test_a_publish_below_the_policys_k_is_refused(cluster, tmp_path: Path) -> None:
    url, north_dir = cluster.hub.url, cluster.consortium.org_dirs[NORTH]
    sheet = tmp_path / "datasheet.json"
    sheet.write_text(json.dumps(SHEET))
    raw = tmp_path / "patients.csv"
    people(240, 9).to_csv(raw, index=False)
    weak = tmp_path / "patients-k2.csv"
    made = cli("dataset", "anonymise", str(raw), "--out", str(weak), "--quasi", QUASI, "--sensitive", "diagnosis",
               "--identifiers", "name", "--k", "2", "--l", "1", "--target", "diagnosis")
    assert made.returncode == 0, made.stderr + made.stdout
    report = json.loads(made.stdout)
    assert 2 <= report["k"] < 5 and report["reference"]["accuracy_original"] is not None
    added = cli("dataset", "add", str(weak), "--hub", url, "--org-dir", str(north_dir), "--license", "CC0-1.0",
                "--name", "patients-k2", *categorical("age", "postcode", "sex", "diagnosis"))
    assert added.returncode == 0, added.stderr + added.stdout

    # the node applies the policy's k = 5: a looser --k 2 does not loosen it
    loose = cli("dataset", "publish", f"{NORTH}/patients-k2", "--hub", url, "--org-dir", str(north_dir),
                "--datasheet", str(sheet), "--quasi", QUASI, "--sensitive", "diagnosis", "--k", "2")
    assert loose.returncode != 0 and f"is {report['k']}-anonymous" in loose.stderr and "k >= 5" in loose.stderr

    # the hub refuses a report below the policy's k, whatever the node did
    with cluster.consortium.org_client(NORTH) as north:
        done = open_data.export_registered(north_dir, "patients-k2", tmp_path / "work")
        open_data.upload_file(north, f"{NORTH}/patients-k2", done.path, done.sha256)
        body = {"version": "1", "sha256": done.sha256, "table_sha256": done.table_sha256, "rows": done.rows,
                "license": "CC0-1.0", "datasheet": SHEET,
                "anonymity": {"about_people": True, "identifiers": ["name"], "quasi": QUASI.split(","),
                              "sensitive": ["diagnosis"], "k": report["k"], "l_diversity": report["l_diversity"]}}
        refused = north.http.post(f"/api/datasets/{NORTH}/patients-k2/versions", json=body)
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"]
        assert f"{report['k']}-anonymous" in detail and "k >= 5" in detail and "['age', 'postcode', 'sex']" in detail
        assert north.get_json(f"/api/datasets/{NORTH}/patients-k2/versions") == []
        assert north.get_json(f"/api/datasets/{NORTH}/patients-k2/uploads/{done.sha256}")["received"] == 0

    # anonymised to the policy, it is published and its report is in the ledger
    good = tmp_path / "patients-k5.csv"
    made = cli("dataset", "anonymise", str(raw), "--out", str(good), "--quasi", QUASI, "--sensitive", "diagnosis",
               "--identifiers", "name")
    assert made.returncode == 0, made.stderr + made.stdout
    added = cli("dataset", "add", str(good), "--hub", url, "--org-dir", str(north_dir), "--license", "CC0-1.0",
                "--name", "patients-k5", *categorical("age", "postcode", "sex", "diagnosis"))
    assert added.returncode == 0, added.stderr + added.stdout
    published = cli("dataset", "publish", f"{NORTH}/patients-k5", "--hub", url, "--org-dir", str(north_dir),
                    "--datasheet", str(sheet), "--quasi", QUASI, "--sensitive", "diagnosis", "--identifiers", "name")
    assert published.returncode == 0, published.stderr + published.stdout
    with cluster.consortium.org_client(NORTH) as north:
        record = north.get_json(f"/api/datasets/{NORTH}/patients-k5/versions/1")
        assert record["anonymity"]["k"] >= 5 and record["anonymity"]["quasi"] == QUASI.split(",")
        entries = north.get_json("/api/ledger", params={"limit": 5000})
        published_entry = [e for e in entries if e["event_type"] == "dataset.published"][-1]
        assert published_entry["payload"]["anonymity"]["k"] == record["anonymity"]["k"]
        policy = north.get_json("/api/policy")["policy"]

    # the members vote k = 100 into the policy: the node applies it at the next publish
    changed = tmp_path / "policy.json"
    changed.write_text(json.dumps(policy | {"version": policy["version"] + 1, "open_data": {"min_k": 100}}))
    opened = cli("proposal", "create", "change_policy", "--policy", str(changed), "--hub", url, "--org-dir",
                 str(north_dir))
    assert opened.returncode == 0, opened.stderr + opened.stdout
    proposal = opened.stdout.split()[1]
    for org in ORGS[:2]:
        voted = cli("vote", proposal, "yes", "-y", "--hub", url, "--org-dir", str(cluster.consortium.org_dirs[org]))
        assert voted.returncode == 0, voted.stderr + voted.stdout
    with cluster.consortium.org_client(NORTH) as north:
        assert north.get_json("/api/policy")["policy"]["open_data"]["min_k"] == 100
    again = cli("dataset", "publish", f"{NORTH}/patients-k5", "--hub", url, "--org-dir", str(north_dir),
                "--datasheet", str(sheet), "--version", "2", "--quasi", QUASI, "--sensitive", "diagnosis")
    assert again.returncode != 0 and "k >= 100" in again.stderr, again.stderr + again.stdout


def test_dp_synthetic_data_is_charged_to_the_budget(cluster, tmp_path: Path) -> None:
    url, north_dir = cluster.hub.url, cluster.consortium.org_dirs[NORTH]
    sheet = tmp_path / "datasheet.json"
    sheet.write_text(json.dumps(SHEET))
    raw = tmp_path / "clinic.csv"
    people(300, 4).to_csv(raw, index=False)
    added = cli("dataset", "add", str(raw), "--hub", url, "--org-dir", str(north_dir), "--license", "CC0-1.0",
                "--name", "clinic", "--budget-epsilon", "2", "--budget-delta", "1e-6",
                *categorical("name", "postcode", "sex", "diagnosis"))
    assert added.returncode == 0, added.stderr + added.stdout
    domain = tmp_path / "domain.json"
    domain.write_text(json.dumps({"age": {"min": 0, "max": 100, "bins": 10, "integer": True},
                                  "sex": {"values": ["F", "M"]},
                                  "postcode": {"values": [f"AB{i}" for i in range(1, 9)]},
                                  "diagnosis": {"values": ["flu", "asthma", "none", "migraine"]}}))
    preview = cli("dataset", "synthesise", f"{NORTH}/clinic", "--org-dir", str(north_dir), "--out",
                  str(tmp_path / "preview.csv"), "--domain", str(domain), "--identifiers", "name", "--seed", "1")
    assert preview.returncode == 0, preview.stderr + preview.stdout
    assert set(pd.read_csv(tmp_path / "preview.csv").columns) == {"age", "sex", "postcode", "diagnosis"}
    publish = ("dataset", "publish", f"{NORTH}/clinic", "--hub", url, "--org-dir", str(north_dir), "--datasheet",
               str(sheet), "--domain", str(domain), "--identifiers", "name")
    first = cli(*publish, "--version", "s1", "--synthetic", "epsilon=1")
    assert first.returncode == 0, first.stderr + first.stdout
    with cluster.consortium.org_client(NORTH) as north:
        record = north.get_json(f"/api/datasets/{NORTH}/clinic/versions/s1")
        assert record["synthetic"]["epsilon"] == 1.0 and "differentially private synthetic" in (
            record["datasheet"]["preprocessing"])
        card = north.get_json(f"/api/datasets/{NORTH}/clinic")
        assert card["privacy_spent"] == pytest.approx(1.0, abs=0.01)
    over = cli(*publish, "--version", "s2", "--synthetic", "epsilon=2")
    assert over.returncode != 0 and "privacy budget" in over.stderr and "would pass" in over.stderr
    with cluster.consortium.org_client(NORTH) as north:
        assert [v["version"] for v in north.get_json(f"/api/datasets/{NORTH}/clinic/versions")] == ["s1"]
