"""The node as a witness of the hub's ledger: it checks each new signed checkpoint against the last one it
kept, cosigns it, and keeps it on its own disk, so that a hub cannot later rewrite what it once showed.

Every ``every_s`` seconds (and at start) :meth:`Witness.step`:

1. reads the hub's key from ``/api/health`` and pins it on first use in ``<org dir>/hub-key.pub``; a changed
   key is an alarm (the node stops cosigning until a person looks);
2. fetches the latest checkpoint and checks its hub signature with the pinned key;
3. asks for a consistency proof from the last checkpoint in ``<org dir>/checkpoints.jsonl`` and checks it
   (:func:`consortium.ledger.checkpoint.next_problem`);
4. appends the checkpoint and its proof to ``checkpoints.jsonl`` (one JSON line, flushed and fsynced, under a
   file lock), then cosigns it with the org key.

On a bad checkpoint it writes both checkpoints, the proof and the reason to ``<org dir>/ledger-alarm.json``,
logs it at ERROR, and refuses to cosign anything while that file exists. ``consortium ledger verify --against
<org dir>/checkpoints.jsonl`` checks the hub's ledger against everything the node kept.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consortium.atomic import exclusive_lock, write_json_atomic
from consortium.client import HubClient, HubError
from consortium.ledger.checkpoint import Checkpoint, next_problem
from consortium.node.hub_pin import PinnedHubKey

log = logging.getLogger("consortium.node.witness")

CHECKPOINTS_FILE = "checkpoints.jsonl"
ALARM_FILE = "ledger-alarm.json"


class Witness:
    """Checks, keeps and cosigns the hub's checkpoints for one org (``client`` signs with the org key)."""

    def __init__(self, client: HubClient, org_dir: Path) -> None:
        if client.identity is None:
            raise ValueError("a witness cosigns with the org key: give it an org-signed client")
        self.client = client
        self.org_dir = Path(org_dir)
        self.kept_path = self.org_dir / CHECKPOINTS_FILE
        self.alarm_path = self.org_dir / ALARM_FILE
        self.hub_key = PinnedHubKey(self.org_dir, client.health)

    def kept(self) -> Checkpoint | None:
        """The last checkpoint kept (a torn last line, from a crash mid-write, is skipped)."""
        if not self.kept_path.exists():
            return None
        last = None
        for line in self.kept_path.read_text(encoding="utf-8").splitlines():
            try:
                last = Checkpoint.from_json(json.loads(line)["checkpoint"])
            except (ValueError, KeyError, TypeError):
                continue
        return last

    def _alarm(self, reason: str, **evidence: Any) -> str:
        log.error("LEDGER ALARM: %s (evidence in %s; this node no longer cosigns)", reason, self.alarm_path)
        write_json_atomic(self.alarm_path,
                          {"reason": reason, "at": datetime.now(UTC).isoformat(), **evidence})
        return "alarm"

    def _pinned_key(self) -> str | None:
        """The hub key, pinned on first use; None after raising the alarm for a changed key."""
        health = self.client.health()
        current = health.get("hub_key")
        if not isinstance(current, str):
            raise ValueError("the hub names no signing key in /api/health")
        pinned = self.hub_key.pin(current)
        if pinned != current:
            self._alarm("the hub's signing key changed", pinned_key=pinned, hub_key=current)
            return None
        return pinned

    def step(self) -> str:
        """One round of checking; what happened: ``alarm``, ``none`` (no checkpoint yet), ``same`` or
        ``cosigned``."""
        if self.alarm_path.exists():
            log.error("LEDGER ALARM standing (%s): not cosigning", self.alarm_path)
            return "alarm"
        key = self._pinned_key()
        if key is None:
            return "alarm"
        try:
            latest = self.client.checkpoint()
        except HubError as exc:
            if exc.status_code == 404:
                return "none"
            raise
        new = Checkpoint.from_json(latest)
        kept = self.kept()
        proof: list[str] = []
        if kept is not None and 0 < kept.size < new.size:
            proof = self.client.consistency_proof(kept.size, new.size)["proof"]
        problem = next_problem(kept, new, [bytes.fromhex(p) for p in proof], key)
        if problem is not None:
            return self._alarm(problem, kept=kept.to_json() if kept else None, new=new.to_json(), proof=proof)
        if kept is not None and kept.size == new.size:
            return "same"
        self._keep(new, proof, kept)
        self.client.cosign_checkpoint(new.size, self.client.identity.sign(new.note))
        return "cosigned"

    def _keep(self, new: Checkpoint, proof: list[str], kept: Checkpoint | None) -> None:
        line = json.dumps({"checkpoint": new.to_json(), "proof": proof, "previous": kept.size if kept else 0,
                           "kept_at": datetime.now(UTC).isoformat()}, sort_keys=True) + "\n"
        with exclusive_lock(self.kept_path), open(self.kept_path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def run_forever(self, stop: threading.Event, every_s: float = 10.0) -> None:
        """:meth:`step` at once and then every ``every_s`` seconds until ``stop``; hub errors are logged and
        retried at the next tick."""
        while not stop.is_set():
            try:
                self.step()
            except Exception as exc:  # the hub may be down: try again at the next tick
                log.warning("ledger witness: %s", exc)
            stop.wait(every_s)


def start_witness(
    client: HubClient, org_dir: Path, stop: threading.Event, every_s: float = 10.0
) -> threading.Thread:
    """Run a :class:`Witness` in its own daemon thread (task handling never waits for it)."""
    thread = threading.Thread(target=Witness(client, org_dir).run_forever, args=(stop, every_s),
                              name="ledger-witness", daemon=True)
    thread.start()
    return thread
