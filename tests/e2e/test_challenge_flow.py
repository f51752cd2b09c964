"""A challenge with real processes: the host's node keeps a hidden test set, three members submit, the node
scores on the public part at once and on the private part after the deadline, signs and posts; the boards,
the refusals (daily limit, wrong shape, after the deadline, a suspended org), the host's re-verification,
and a scan showing that no test row reached the hub's database or blob store."""

from __future__ import annotations

import json
import struct
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, select, update

from consortium.client import HubClient, HubError
from consortium.codec import encode_tensors
from consortium.fl.core import parse_hyperparams
from consortium.fl.registry import get_algorithm
from consortium.governance.wire import ProposalCreate
from consortium.hub.db.challenge_models import ChallengeSubmission
from consortium.hub.db.models import Base
from consortium.launch import start_hub, start_node
from consortium.node.challenges import ChallengeBook, open_challenge, part_sha256, prepare_statement, verify
from consortium.scenario import DIGITS_HYPERPARAMETERS, provision_digits, vote_as
from consortium.tables import load_table

pytestmark = pytest.mark.e2e

HOST, SUBMITTERS = "north-clinic", ("south-lab", "east-institute", "west-hospital")
OPEN_FOR_S = 45.0


def hidden_test_set(consortium, path: Path) -> pd.DataFrame:
    """The digits test split, every cell nudged by a distinct tiny amount so each value is findable."""
    rng = np.random.default_rng(5)
    x = consortium.x_test.astype(np.float64) + rng.uniform(1e-4, 1e-3, size=consortium.x_test.shape)
    frame = pd.DataFrame(x, columns=[f"p{i}" for i in range(x.shape[1])])
    frame["label"] = consortium.y_test
    frame.to_csv(path, index=False)
    return frame


def trained(workdir: Path, org: str, epochs: int, layers=(64, 32, 10)) -> tuple[dict, dict]:
    """The org's own model: a classifier trained on its share only; (spec, params)."""
    hp = {**DIGITS_HYPERPARAMETERS, "layers": list(layers), "local_epochs": epochs}
    family = get_algorithm("classifier")
    parsed = parse_hyperparams(family, hp)
    data = load_table(workdir / "data" / f"{org}.csv", "label").to_local_data()
    params = family.local_update(parsed, family.init(parsed, 64, 1), data, seed=3).tensors
    return {"name": "classifier", "hyperparameters": hp}, params


def payload(spec: dict, params: dict) -> bytes:
    return encode_tensors(params, metadata={"submission": json.dumps({"algorithm": spec})})


def refused(status: int, words: str, fn, *args) -> None:
    with pytest.raises(HubError) as caught:
        fn(*args)
    assert caught.value.status_code == status and words in caught.value.detail, caught.value


def wait_for(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def found_values(frame: pd.DataFrame) -> list[bytes]:
    """Byte patterns of 40 test cells: their text, float64 and float32 encodings."""
    cells = frame.drop(columns="label").to_numpy().ravel()[::577][:40]
    return [p for v in cells for p in (repr(float(v)).encode(), struct.pack("<d", v), struct.pack("<f", v))]


def test_a_challenge_end_to_end(db_url: str, tmp_path: Path) -> None:
    hub = start_hub(tmp_path / "hub", db_url=db_url)
    node = None
    try:
        consortium = provision_digits(hub, tmp_path, (HOST, *SUBMITTERS))
        dirs = consortium.org_dirs
        node = start_node(hub.url, dirs[HOST], poll_wait=5.0)
        test_file = dirs[HOST] / "hidden-test.csv"
        frame = hidden_test_set(consortium, test_file)
        with hub.client() as admin:
            admin.wait_online([HOST])
            steward = admin.create_user("west-steward", "steward", "west-hospital")["token"]

        # The host opens it: the statement commits to both parts' hashes, signed by its key.
        with consortium.org_client(HOST) as host:
            statement, test_set = prepare_statement(
                hub_id=host.health()["hub_id"], host=HOST, name="digits-cup", task="classify digits",
                path=test_file, target="label", metric="accuracy", higher_is_better=True,
                deadline=datetime.now(UTC) + timedelta(seconds=OPEN_FOR_S), daily_limit=2, prize=0,
                split_seed=11, public_fraction=0.5)
            challenge = open_challenge(host, dirs[HOST], statement, test_set)
            cid = challenge["id"]
            opened = host.ledger(after=challenge["opened_seq"] - 1, limit=1)[0]
        parts = ChallengeBook(dirs[HOST]).checked_parts("digits-cup")
        assert opened["payload"]["public_sha256"] == part_sha256(parts["public"])
        assert opened["payload"]["private_sha256"] == part_sha256(parts["private"])
        assert opened["actor_signature"]

        # Three submitters; south submits twice (its daily limit), and a third time is refused.
        submissions = {}
        for org, epochs in zip(SUBMITTERS, (1, 4, 8), strict=True):
            with consortium.org_client(org) as client:
                submissions[org] = client.submit_challenge_weights(cid, payload(*trained(tmp_path, org, epochs)))
        with consortium.org_client("south-lab") as south:
            south.submit_challenge_weights(cid, payload(*trained(tmp_path, "south-lab", 6)))
            refused(429, "daily limit is 2", south.submit_challenge_weights, cid,
                    payload(*trained(tmp_path, "south-lab", 2)))
        with consortium.org_client("east-institute") as east:
            spec, params = trained(tmp_path, "east-institute", 1, layers=(64, 16, 10))
            spec["hyperparameters"]["layers"] = [64, 32, 10]
            refused(422, "wrong shape", east.submit_challenge_weights, cid, payload(spec, params))
            refused(409, "final board", east.challenge_leaderboard, cid, "final")

        board = wait_for("three public scores", lambda: len(
            hub.client().challenge_leaderboard(cid)["placings"]) == 3 and hub.client().challenge_leaderboard(cid))
        assert {p["org"] for p in board["placings"]} == set(SUBMITTERS)
        scores = [p["score"] for p in board["placings"]]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        with consortium.org_client("east-institute") as east:
            own = east.challenge_submissions(cid)
            assert [s["org"] for s in own] == ["east-institute"] and own[0]["private"] is None

        # West is suspended by vote; its steward's submission is refused with the reason.
        with consortium.org_client(HOST) as host:
            suspension = host.create_proposal(ProposalCreate(kind="suspend_org", org="west-hospital",
                                                             reason="left the consortium"))
        for org in (HOST, "south-lab", "east-institute"):
            if hub.client().proposal(suspension["id"])["status"] == "open":
                vote_as(dirs[org], hub.url, suspension["id"], "yes")
        with HubClient(hub.url, token=steward) as west:
            refused(401, "'west-hospital' is suspended", west.submit_challenge_weights, cid,
                    payload(*trained(tmp_path, "west-hospital", 1)))

        # After the deadline: no more submissions; the node scores the private part, the board is final.
        wait_for("the deadline", lambda: hub.client().challenge(cid)["status"] != "open", OPEN_FOR_S + 30)
        with consortium.org_client("east-institute") as east:
            refused(410, "no more submissions", east.submit_challenge_weights, cid,
                    payload(*trained(tmp_path, "east-institute", 2)))
        wait_for("the final board", lambda: hub.client().challenge(cid)["status"] == "final", 60)
        final = hub.client().challenge_leaderboard(cid, "final")["placings"]
        assert {p["org"] for p in final} == set(SUBMITTERS)
        with consortium.org_client(HOST) as host:
            assert verify(host, dirs[HOST], cid) == []
            entries = host.ledger(limit=10_000)
        kinds = [e["event_type"] for e in entries]
        assert kinds.count("challenge.submitted") == 4 and kinds.count("challenge.scored") == 8
        assert kinds.count("challenge.finalised") == 1

        # No test row on the hub: neither in any table nor in any file under its data directory.
        engine = create_engine(db_url)
        with engine.connect() as conn:
            dump = "\n".join(repr(row) for table in Base.metadata.sorted_tables
                             for row in conn.execute(select(table))).encode()
        engine.dispose()
        files = [p.read_bytes() for p in (tmp_path / "hub").rglob("*") if p.is_file()]
        if db_url.startswith("sqlite:///"):
            files.append(Path(db_url.removeprefix("sqlite:///")).read_bytes())
        patterns = found_values(frame)
        assert len(patterns) == 120 and b"hidden-test" not in dump
        assert all(p in test_file.read_bytes() for p in patterns[::3]), "the scan looks for what the file holds"
        assert [p for p in patterns if p in dump or any(p in f for f in files)] == []

        # A score changed in the hub's database is caught by the host's re-verification.
        winner = final[0]["submission_id"]
        engine = create_engine(db_url)
        with engine.begin() as conn:
            conn.execute(update(ChallengeSubmission).where(ChallengeSubmission.id == winner)
                         .values(private_score=0.0))
        engine.dispose()
        with consortium.org_client(HOST) as host:
            problems = verify(host, dirs[HOST], cid)
        assert any(f"submission {winner}: private score 0.0 on the hub" in p for p in problems), problems
        assert "the hub's final board differs from the board recomputed from the local scores" in problems
    except BaseException:
        print(hub.log_tail(80))
        if node is not None:
            print(node.log_tail(60))
        raise
    finally:
        if node is not None:
            node.stop()
        hub.stop()
