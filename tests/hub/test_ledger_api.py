"""The ledger audited over the API (a real hub process, SQLite and PostgreSQL): the client compares the
chain's end with the head the hub serves, so a tail deleted in the database is found, before and after new
appends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from consortium.hub.db.models import LedgerEntry
from consortium.hub.db.session import make_engine
from consortium.launch import start_hub
from consortium.ledger_audit import verify_from_hub
from consortium.scenario import ORGS, provision_digits

pytestmark = pytest.mark.e2e


def test_a_cut_tail_is_found_over_the_api_and_named_after_the_next_append(db_url: str,
                                                                         tmp_path: Path) -> None:
    hub = start_hub(tmp_path / "hub", db_url=db_url)
    try:
        provision_digits(hub, tmp_path, ORGS[:2])
        url = hub.db_url or f"sqlite:///{hub.data_dir / 'hub.db'}"
        engine = make_engine(url)
        with hub.client() as admin:
            head = admin.ledger_head()
            entries = admin.ledger(limit=10_000)
            assert head == {"seq": entries[-1]["seq"], "hash": entries[-1]["hash"]}
            assert verify_from_hub(admin).ok

            total = head["seq"]
            with engine.begin() as conn:
                conn.execute(delete(LedgerEntry).where(LedgerEntry.seq > total - 3))
            report = verify_from_hub(admin)
            assert (report.ok, report.first_bad_seq) == (False, total - 2)
            assert report.reason == (f"entries {total - 2}–{total} are missing: the chain was cut after "
                                     f"entry {total - 3}")

            admin.create_org("late-member")  # org.proposed, then its admit_org proposal.opened
            assert admin.ledger_head()["seq"] == total + 2
            report = verify_from_hub(admin)
            assert (report.ok, report.first_bad_seq) == (False, total - 2), report.reason
            assert report.reason.endswith(f"the chain was cut after entry {total - 3}")

            cli = subprocess.run(
                [sys.executable, "-m", "consortium", "ledger", "verify", "--hub", hub.url,
                 "--token", hub.admin_token], capture_output=True, text=True, timeout=120,
            )
            assert cli.returncode == 1, cli.stdout + cli.stderr
            said = " ".join(cli.stderr.split())  # rich wraps long lines
            assert f"at entry {total - 2}: entries {total - 2}–{total} are missing" in said, said

            with engine.begin() as conn:
                conn.execute(delete(LedgerEntry))
                assert conn.scalar(select(func.count()).select_from(LedgerEntry)) == 0
            admin.create_org("after-the-wipe")
            report = verify_from_hub(admin)
        engine.dispose()
        assert (report.ok, report.first_bad_seq, report.checked) == (False, 1, 0)
        assert report.reason == (f"entries 1–{total + 2} are missing: every entry before entry {total + 3} "
                                 "was cut")
    finally:
        hub.stop()
