"""The blob store's disk full (a small tmpfs under it: needs the right to mount) and PostgreSQL restarted
mid-run (only with ``CONSORTIUM_FAULTS_PG_RESTART=1``: it cuts every connection to the machine's cluster,
other test runs' included)."""

from __future__ import annotations

import os
import subprocess

import pytest

from consortium.bench.fault_scenarios import disk_full, pg_restart

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def _can_mount(tmp_path) -> bool:
    target = tmp_path / "probe"
    target.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)],
                      capture_output=True).returncode != 0:
        return False
    subprocess.run(["umount", str(target)], capture_output=True)
    return True


def test_a_full_blob_store_fails_the_run_with_its_reason_and_nothing_half_written(tmp_path) -> None:
    if not _can_mount(tmp_path):
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    result = disk_full(tmp_path / "disk", rounds=6)
    assert result["first_run"] == "failed" and "No space left on device" in result["reason"], result
    assert "blob store" in result["reason"], result
    assert result["ok"], result


@pytest.mark.postgres
@pytest.mark.skipif(os.environ.get("CONSORTIUM_FAULTS_PG_RESTART") != "1",
                    reason="restarts the shared PostgreSQL cluster: set CONSORTIUM_FAULTS_PG_RESTART=1")
def test_a_run_rides_through_a_postgresql_restart(tmp_path) -> None:
    admin_url = os.environ.get("CONSORTIUM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    result = pg_restart(tmp_path / "pg", admin_url, rounds=6)
    assert result["ok"], result
