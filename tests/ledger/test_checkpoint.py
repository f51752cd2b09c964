"""Checkpoint notes, their parsing, and the witness's rule for accepting the next checkpoint."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consortium.bench.ledger_build import build_ledger, checkpoints_of
from consortium.crypto import OrgIdentity
from consortium.ledger.checkpoint import Checkpoint, checkpoint_note, next_problem
from consortium.ledger.merkle import MerkleTree, entry_leaf

HUB = OrgIdentity.from_private_key("hub", Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))
OTHER = OrgIdentity.from_private_key("x", Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))
HUB_ID = "ab" * 16


def test_the_note_is_one_field_a_line_and_refuses_what_could_smuggle_lines() -> None:
    note = checkpoint_note(HUB_ID, 5, "cd" * 32, "2026-01-01T00:00:00+00:00")
    assert note.decode().splitlines() == ["consortium-ledger-checkpoint/1", f"origin {HUB_ID}", "size 5",
                                          f"root {'cd' * 32}", "time 2026-01-01T00:00:00+00:00"]
    for bad in [("x", 5, "cd" * 32, "t"), (HUB_ID, -1, "cd" * 32, "t"), (HUB_ID, True, "cd" * 32, "t"),
                (HUB_ID, 5, "CD" * 32, "t"), (HUB_ID, 5, "cd" * 32, "t\nsize 9")]:
        with pytest.raises(ValueError):
            checkpoint_note(*bad)
    with pytest.raises(ValueError):
        Checkpoint.from_json({"origin": HUB_ID, "size": 5})


def test_a_witness_accepts_consistent_growth_only() -> None:
    built = build_ledger(24, HUB, [], random.Random(0), HUB_ID, checkpoint_every=8)
    first, second, third = built.checkpoints
    tree = MerkleTree(entry_leaf(e.hash) for e in built.entries)
    proof = tree.consistency_proof(8, 24)
    assert next_problem(None, first, [], HUB.public_key_b64) is None
    assert next_problem(first, third, proof, HUB.public_key_b64) is None
    assert next_problem(third, third, [], HUB.public_key_b64) is None
    assert "smaller" in next_problem(third, first, [], HUB.public_key_b64)
    assert "pinned hub key" in next_problem(first, third, proof, OTHER.public_key_b64)
    rewritten = build_ledger(24, HUB, [], random.Random(1), HUB_ID)
    forged = checkpoints_of(rewritten.entries, HUB, HUB_ID, 8)[2]
    other_proof = MerkleTree(entry_leaf(e.hash) for e in rewritten.entries).consistency_proof(8, 24)
    assert "not consistent" in next_problem(first, forged, other_proof, HUB.public_key_b64)
    assert Checkpoint.from_json(second.to_json()) == second
