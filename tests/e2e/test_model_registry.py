"""The model registry and releases end to end: a real hub, two real nodes, two runs of one project (versions
1 and 2 of its model line), the registry's filters over HTTP and the CLI, a release proposed with the CLI
and passed by the data owners' signed yes, after which the card, licence and rights are frozen; bad release
proposals get a 4xx naming the field and change nothing; an org outside the project sees none of it. The
released model then enters a challenge as its team's submission (the challenge CLI end to end)."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
from typer.testing import CliRunner

from consortium.cli import app
from consortium.client import HubError
from consortium.scenario import ORGS, digits_spec, propose_and_approve, trained_model, vote_as

pytestmark = pytest.mark.e2e
NORTH, SOUTH, EAST = ORGS
runner = CliRunner()


def expect(status: int, fragment: str, fn, *args, **kwargs) -> None:
    with pytest.raises(HubError) as info:
        fn(*args, **kwargs)
    assert info.value.status_code == status and fragment in info.value.detail, (
        info.value.status_code, info.value.detail)


def test_versions_release_by_vote_and_registry_filters(cluster) -> None:
    consortium, hub = cluster.consortium, cluster.hub
    cluster.start_nodes((NORTH, SOUTH))
    project = propose_and_approve(consortium, digits_spec("registry", [NORTH, SOUTH], rounds=1))
    with hub.client() as admin:
        first, second = (trained_model(admin, project["id"]) for _ in range(2))
        balances = {row["org"]: row["balance"] for row in admin.credit_balances()}
        assert balances[NORTH] == balances[SOUTH] == 2 and balances[EAST] == 0, balances
        history = admin.credit_account(NORTH)["history"]
        assert [(m["amount"], m["reason"]) for m in history] == [(1, "compute"), (1, "compute")]
        line = admin.project_models(project["id"])
        assert [(m["id"], m["version"], m["status"]) for m in line] == [(first, 1, "trained"), (second, 2, "trained")]
        assert line[1]["license"] == "CC-BY-4.0" and line[1]["card"]["version"] == 2
        assert [t["source"] for t in line[1]["obligations"]["attribution"]] == [f"{NORTH}/digits",
                                                                               f"{SOUTH}/digits"]

        head = admin.ledger_head()
        for body, status, fragment in [
            ({"model_id": second, "licence": "Foo-1.0"}, 422, "licence: unknown licence id 'Foo-1.0'"),
            ({"model_id": second, "licence": "CC-BY-NC-4.0", "commercial": True}, 422,
             "a commercial release cannot be under a non-commercial licence"),
            ({"model_id": second, "licence": "MIT", "visibility": "private"}, 422, "visibility"),
        ]:
            expect(status, fragment, admin.request, "POST", "/api/proposals",
                   json={"kind": "release_model", **body})
        assert admin.ledger_head() == head and admin.proposals(kind="release_model") == []

    shown = runner.invoke(app, ["credits", NORTH, "--json", "--hub", hub.url, "--token", hub.admin_token])
    assert shown.exit_code == 0 and '"balance": 2' in shown.output, shown.output
    proposed = runner.invoke(app, ["proposal", "create", "release-model", "--model", str(second), "--licence",
                                   "cc-by-4.0", "--visibility", "members", "--download", "--no-commercial",
                                   "--hub", hub.url, "--token", hub.admin_token])
    assert proposed.exit_code == 0, proposed.output
    with hub.client() as admin:
        [release] = admin.proposals(kind="release_model")
    assert f"proposal {release['id']} (release_model) is open" in proposed.output
    assert release["subject"]["licence"] == "CC-BY-4.0" and release["subject"]["download"] == "members"
    assert release["veto_holders"] == [NORTH, SOUTH] and release["electorate"] == sorted(ORGS)
    with consortium.org_client(EAST) as east:
        expect(404, f"no model {second}", east.model, second)
        assert east.list_models() == []
        expect(404, f"no model {second}", east.propose_release, second, "CC-BY-4.0")

    vote_as(consortium.org_dirs[NORTH], hub.url, release["id"], "yes")
    vote_as(consortium.org_dirs[EAST], hub.url, release["id"], "yes")
    with hub.client() as admin:
        assert admin.model(second)["status"] == "trained", f"{SOUTH} holds a veto and has not voted"
    vote_as(consortium.org_dirs[SOUTH], hub.url, release["id"], "yes")
    with hub.client() as admin:
        released = admin.model(second)
        assert admin.proposal(release["id"])["status"] == "passed"
        assert (released["status"], released["license"], released["visibility"]) == ("released", "CC-BY-4.0",
                                                                                      "members")
        assert released["card"]["release"]["proposal_id"] == release["id"]
        assert "## Release (frozen)" in admin.model_card_markdown(second)
        expect(409, f"model {second} is released", admin.propose_release, second, "CC-BY-4.0")
        assert admin.model(second) == released

        assert [m["id"] for m in admin.list_models(status="released")] == [second]
        assert [m["id"] for m in admin.list_models(project="registry", status="trained")] == [first]
        assert [m["id"] for m in admin.list_models(licence="cc-by")] == [first, second]
        assert [m["id"] for m in admin.list_models(org=SOUTH, limit=1, offset=1)] == [second]
        assert admin.list_models(org=EAST) == []

    listed = runner.invoke(app, ["model", "list", "--status", "released", "--hub", hub.url, "--token",
                                 hub.admin_token], env={"COLUMNS": "240"})
    assert listed.exit_code == 0, listed.output
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in listed.output.splitlines()
            if line.startswith("│")]
    assert [row[:6] for row in rows] == [[str(second), "registry", "2", "released", "CC-BY-4.0", "attribution"]]

    enter_a_challenge_as_a_team(cluster, second)


def enter_a_challenge_as_a_team(cluster, model_id: int) -> None:
    """North opens a challenge with the CLI on a local test file; south enters the released model for its
    team (north and south), east (which may not download it) may not; north's node scores it on the public
    part."""
    consortium, hub = cluster.consortium, cluster.hub
    frame = pd.DataFrame(consortium.x_test.astype("float64"), columns=[f"p{i}" for i in range(64)])
    frame["label"] = consortium.y_test
    frame.to_csv(cluster.workdir / "cup.csv", index=False)
    dirs = {org: str(path) for org, path in consortium.org_dirs.items()}
    opened = runner.invoke(app, ["challenge", "create", "cup", "--file", str(cluster.workdir / "cup.csv"),
                                 "--target", "label", "--task", "classify digits", "--days", "1", "--json",
                                 "--hub", hub.url, "--org-dir", dirs[NORTH]])
    assert opened.exit_code == 0, opened.output
    challenge_id = json.loads(opened.output)["id"]
    entered = runner.invoke(app, ["challenge", "submit", str(challenge_id), "--model", str(model_id), "--json",
                                  "--hub", hub.url, "--org-dir", dirs[SOUTH]])
    assert entered.exit_code == 0, entered.output
    assert json.loads(entered.output)["team"] == [NORTH, SOUTH]
    refused = runner.invoke(app, ["challenge", "submit", str(challenge_id), "--model", str(model_id),
                                  "--hub", hub.url, "--org-dir", dirs[EAST]])
    assert refused.exit_code == 2 and f"no model {model_id}" in refused.output, refused.output
    deadline = time.monotonic() + 60
    while True:
        board = runner.invoke(app, ["challenge", "leaderboard", str(challenge_id), "--json", "--hub", hub.url,
                                    "--token", hub.admin_token])
        placings = json.loads(board.output)["placings"]
        if placings:
            break
        assert time.monotonic() < deadline, "north's node did not score the team's submission"
        time.sleep(0.5)
    assert [(p["org"], p["team"]) for p in placings] == [(SOUTH, [NORTH, SOUTH])] and placings[0]["score"] > 0.2
    with hub.client() as admin:
        [entry] = admin.model(model_id)["challenges"]
        card = admin.model_card_markdown(model_id)
    assert (entry["challenge"], entry["team"], entry["public_rank"]) == ("cup", [NORTH, SOUTH], 1)
    assert f"| cup (#{challenge_id}) | {NORTH} | {NORTH}, {SOUTH} | accuracy |" in card
    listed = runner.invoke(app, ["challenge", "list", "--hub", hub.url, "--token", hub.admin_token],
                           env={"COLUMNS": "240"})
    assert listed.exit_code == 0 and "cup" in listed.output and "open" in listed.output, listed.output
