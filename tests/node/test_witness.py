"""A node witnesses a real hub's ledger (SQLite and PostgreSQL): it pins the hub key, checks each checkpoint's
consistency proof, keeps and cosigns it; when the operator rewrites the ledger with the hub's own key (re-hashed,
re-signed, re-checkpointed) the node raises the alarm, stops cosigning, and ``ledger verify --against`` its
kept checkpoints names the rewrite."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from consortium.client import HubError
from consortium.hub.db.models import (
    LedgerCheckpoint,
    LedgerCosignature,
    LedgerEntry,
    LedgerHead,
    LedgerTree,
    LedgerTreeHead,
)
from consortium.hub.db.session import make_engine, session_factory
from consortium.hub.services import hub_key
from consortium.hub.services.ledger import to_chained
from consortium.launch import start_hub
from consortium.ledger.chain import expected_hash, payload_commitment
from consortium.ledger.signatures import entry_message
from consortium.ledger_audit import load_claims, verify_from_hub
from consortium.node.witness import Witness
from consortium.scenario import ORGS, provision_digits

pytestmark = pytest.mark.e2e


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except HubError:  # 404 before the first checkpoint
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError("condition not met")


def rewrite_with_the_hub_key(url: str, key_file: Path, seq: int) -> None:
    """What an operator holding the hub's key can do: change entry ``seq`` and re-hash, re-sign everything
    after it, and throw away the tree, checkpoints and cosignatures (the hub re-checkpoints by itself)."""
    key = hub_key.load_or_create(key_file)
    engine = make_engine(url)
    with session_factory(engine)() as session:
        rows = list(session.scalars(select(LedgerEntry).where(LedgerEntry.seq >= seq).order_by(LedgerEntry.seq)))
        prev = rows[0].prev_hash
        for row in rows:
            if row.seq == seq:
                row.payload = {**row.payload, "rewritten": True}
                row.payload_commitment = payload_commitment(row.payload, row.salt)
            row.prev_hash = prev
            row.hash = expected_hash(to_chained(row))
            row.signature = key.sign(entry_message(row.hash))
            prev = row.hash
        session.flush()
        session.execute(update(LedgerHead).values(hash=prev))
        for table in (LedgerCosignature, LedgerCheckpoint, LedgerTree):
            session.execute(delete(table))
        session.execute(update(LedgerTreeHead).values(size=0))
        session.commit()
    engine.dispose()


def test_a_node_witnesses_cosigns_and_catches_a_rewrite_by_the_hub_itself(db_url: str, tmp_path: Path) -> None:
    hub = start_hub(tmp_path / "hub", db_url=db_url, extra_args=("--checkpoint-interval", "0.2"))
    try:
        consortium = provision_digits(hub, tmp_path, ORGS[:2])
        org = ORGS[0]
        with consortium.org_client(org) as client, hub.client() as admin:
            witness = Witness(client, consortium.org_dirs[org])
            first = wait_for(lambda: admin.checkpoint() if admin.ledger_head()["seq"] ==
                             admin.checkpoint()["size"] else None)
            assert witness.step() == "cosigned"
            assert witness.step() == "same"
            pinned = (consortium.org_dirs[org] / "hub-key.pub").read_text().strip()
            assert pinned == admin.health()["hub_key"]
            admin.create_org("late-member")
            wait_for(lambda: admin.checkpoint()["size"] > first["size"])
            assert witness.step() == "cosigned"
            latest = admin.checkpoint()
            assert [c["org"] for c in latest["cosignatures"]] == [org]
            kept = consortium.org_dirs[org] / "checkpoints.jsonl"
            lines = [json.loads(line) for line in kept.read_text().splitlines()]
            assert [line["checkpoint"]["size"] for line in lines] == [first["size"], latest["size"]]
            assert lines[1]["previous"] == first["size"] and lines[1]["proof"]
            report = verify_from_hub(admin, load_claims(kept))
            assert report.ok and report.checkpoints >= 4, report.reason

            url = hub.db_url or f"sqlite:///{hub.data_dir / 'hub.db'}"
            rewrite_with_the_hub_key(url, hub.data_dir / "hub-key.pem", seq=5)
            wait_for(lambda: admin.checkpoints())
            assert verify_from_hub(admin).ok  # the hub's own view is consistent again
            assert witness.step() == "alarm"
            alarm = json.loads((consortium.org_dirs[org] / "ledger-alarm.json").read_text())
            assert "rewritten" in alarm["reason"] and alarm["kept"]["size"] == latest["size"]
            assert witness.step() == "alarm"  # and it stays raised
            report = verify_from_hub(admin, load_claims(kept))
            assert not report.ok and report.bad_checkpoint == first["size"], report
            assert "was rewritten after it was signed" in report.reason
    finally:
        hub.stop()
