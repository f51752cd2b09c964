"""An org key rotated mid-consortium, end to end: a real hub and three real node processes. North rotates its
key with ``consortium org rotate-key`` between two runs; its running node signs with the new key from then
on and trains in the next run, its witness keeps cosigning, requests signed with the old key are refused, and
``consortium ledger verify`` still passes over the entries the old key signed."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from consortium.client import HubClient, HubError
from consortium.crypto import KEY_FILE, OLD_KEY_FILE, OrgIdentity, load_org_identity
from consortium.launch import child_env
from consortium.scenario import ORGS, digits_spec, propose_and_approve

pytestmark = pytest.mark.e2e
NORTH = ORGS[0]


def consortium_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "consortium", *args], env=child_env(), capture_output=True,
                          text=True, timeout=120)


def run_to_the_end(admin: HubClient, project_id: int, timeout: float = 180.0):
    run = admin.start_run(project_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = admin.progress(run["id"], wait=5.0)
        if progress.run.status != "running":
            return admin.progress(run["id"])
    raise AssertionError(f"run {run['id']} did not finish within {timeout}s")


def old_identity(org_dir) -> OrgIdentity:
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key((org_dir / OLD_KEY_FILE).read_bytes(), password=None)
    return OrgIdentity.from_private_key(NORTH, private)


def test_a_rotated_key_keeps_the_node_training_and_the_ledger_verifying(cluster) -> None:
    cluster.start_nodes(poll_wait=5.0)
    north_dir = cluster.consortium.org_dirs[NORTH]
    old = load_org_identity(north_dir)
    with cluster.hub.client() as admin:
        first = propose_and_approve(cluster.consortium, digits_spec("before-rotation", ORGS, rounds=2))
        assert run_to_the_end(admin, first["id"]).run.status == "completed", cluster.logs()

        rotated = consortium_cli("org", "rotate-key", "--hub", cluster.hub.url, "--org-dir", str(north_dir))
        assert rotated.returncode == 0, rotated.stderr
        new = load_org_identity(north_dir)
        assert new.key_id != old.key_id and old_identity(north_dir).key_id == old.key_id
        assert json.loads((north_dir / "org.json").read_text())["key_id"] == new.key_id
        assert (north_dir / KEY_FILE).stat().st_mode & 0o077 == 0
        keys = admin.org_keys(NORTH)
        assert [(k["key_id"], k["retired_at"] is None) for k in keys] == [
            (old.key_id, False), (new.key_id, True)]
        assert {o["name"]: o["key_id"] for o in admin.orgs()}[NORTH] == new.key_id
        with HubClient(cluster.hub.url, identity=old_identity(north_dir)) as stale, \
                pytest.raises(HubError) as refused:
            stale.get_json("/api/me")
        assert refused.value.status_code == 401
        again = consortium_cli("org", "rotate-key", "--hub", cluster.hub.url, "--org-dir", str(north_dir))
        assert again.returncode == 0, again.stderr  # a second rotation, from the new key
        newest = load_org_identity(north_dir)

        second = propose_and_approve(cluster.consortium, digits_spec("after-rotation", ORGS, rounds=2))
        progress = run_to_the_end(admin, second["id"])
        assert progress.run.status == "completed", cluster.logs()
        assert all(f"{NORTH}/digits" in r.participants for r in progress.rounds), cluster.logs()

        entries = admin.ledger(limit=10_000)
        by_old = [e for e in entries if e["actor_key_id"] == old.key_id]
        assert {e["event_type"] for e in by_old} >= {"proposal.voted", "org.key_rotated"}
        deadline = time.monotonic() + 60
        while not any(c["org"] == NORTH and c["key_id"] == newest.key_id
                      for c in admin.checkpoint().get("cosignatures", [])):
            assert time.monotonic() < deadline, "north's witness stopped cosigning after the rotation"
            time.sleep(1.0)

    verified = consortium_cli("ledger", "verify", "--hub", cluster.hub.url,
                              "--token", cluster.hub.admin_token,
                              "--against", str(north_dir / "checkpoints.jsonl"))
    assert verified.returncode == 0 and "ledger OK" in verified.stdout, verified.stdout + verified.stderr
