"""`consortium audit mia --model`: a model trained on a real hub is downloaded with an org's key and attacked
with that org's own rows (members) and rows the model never saw (the hub's held-out digits); the result lands
on the downloaded card. A members file that is none of the model's datasets is refused."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
from typer.testing import CliRunner

from consortium.cli import app
from consortium.scenario import ORGS, digits_spec, propose_and_approve

pytestmark = pytest.mark.e2e
NORTH, SOUTH = ORGS[:2]
runner = CliRunner()


def test_audit_mia_attacks_a_hub_model_with_the_callers_rows(cluster, tmp_path) -> None:
    consortium, hub = cluster.consortium, cluster.hub
    cluster.start_nodes((NORTH, SOUTH))
    project = propose_and_approve(consortium, digits_spec("audited", [NORTH, SOUTH], rounds=2))
    with hub.client() as admin:
        run = admin.start_run(project["id"])
        deadline = time.monotonic() + 240
        while admin.progress(run["id"], wait=5.0).run.status == "running":
            assert time.monotonic() < deadline, cluster.logs()
        model_id = admin.run(run["id"])["model_id"]
    held_out = pd.DataFrame(consortium.x_test, columns=[f"p{i}" for i in range(64)]).astype("float64")
    held_out["label"] = consortium.y_test
    non_members = tmp_path / "held_out.csv"
    held_out.to_csv(non_members, index=False)
    members = cluster.workdir / "data" / f"{NORTH}.csv"
    out = tmp_path / "model"

    def audit(model: str, member_file) -> object:
        return runner.invoke(app, ["audit", "mia", "--model", model, "--hub", hub.url, "--org-dir",
                                   str(consortium.org_dirs[NORTH]), "--members", str(member_file), "--non-members",
                                   str(non_members), "--target", "label", "--out", str(out)])

    result = audit("audited@1", members)
    assert result.exit_code == 0, result.output
    card = json.loads((out / "model_card.json").read_text())
    mia = card["privacy"]["audit"]["mia"]
    assert mia["model_id"] == model_id and mia["members_dataset"] == f"{NORTH}/digits"
    assert 0 <= mia["loss_threshold"]["auc"] <= 1 and 0 <= mia["shadow_model"]["auc"] <= 1
    assert mia["non_members"] == len(consortium.y_test) - len(consortium.y_test) // 2
    assert "Membership inference" in (out / "MODEL_CARD.md").read_text()
    assert "the hub's own card is unchanged" in result.output

    refused = audit(str(model_id), non_members)
    assert refused.exit_code != 0
    assert f"is none of the datasets model {model_id} was trained on ({NORTH}/digits, {SOUTH}/digits)" in " ".join(
        refused.output.split())
    missing = audit("audited@7", members)
    assert missing.exit_code != 0 and "no model 'audited@7' that you may see" in missing.output
