"""The stored Merkle tree, signed checkpoints, proofs and cosignatures (service level, SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.crypto import OrgIdentity
from consortium.hub.db.models import LedgerEntry, LedgerTree, Org
from consortium.hub.services import checkpoints, hub_identity, hub_key, ledger
from consortium.hub.services.errors import BadRequest, Forbidden, NotFound
from consortium.hub.services.identity import Principal
from consortium.ledger.checkpoint import Checkpoint
from consortium.ledger.merkle import MerkleTree, entry_leaf, root_of, verify_consistency, verify_inclusion
from consortium.protocol import Role

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def grow(session: Session, n: int) -> None:
    ledger.record_many(session, [("run.started", "hub", {"run_id": i}) for i in range(n)], scope=ledger.MEMBERS)
    session.commit()


def reference(session: Session) -> MerkleTree:
    return MerkleTree(entry_leaf(h) for h in session.scalars(select(LedgerEntry.hash).order_by(LedgerEntry.seq)))


def test_checkpoints_sign_the_tree_root_and_proofs_come_from_stored_subtrees(session: Session) -> None:
    grow(session, 298)
    first = checkpoints.maybe_checkpoint(session, NOW, every=64, interval_s=10)
    assert first is not None and first.size == 300
    key = hub_key.of(session)
    signed = Checkpoint(first.origin, first.size, first.root, first.created_at, first.key_id, first.signature)
    assert signed.signed_by(key.public_key_b64) and first.origin == hub_identity.hub_id(session)
    tree = reference(session)
    assert bytes.fromhex(first.root) == tree.root(300)
    assert checkpoints.maybe_checkpoint(session, NOW, every=64, interval_s=10) is None  # nothing new

    grow(session, 10)
    assert checkpoints.maybe_checkpoint(session, NOW + timedelta(seconds=5), every=64, interval_s=10) is None
    second = checkpoints.maybe_checkpoint(session, NOW + timedelta(seconds=11), every=64, interval_s=10)
    assert second is not None and second.size == 310
    tree = reference(session)
    for seq in (1, 2, 150, 299, 300, 310):
        size, digest, proof = checkpoints.inclusion_proof(session, seq, None)
        assert size == 310
        assert verify_inclusion(entry_leaf(digest), seq - 1, size, [bytes.fromhex(p) for p in proof],
                                bytes.fromhex(second.root))
    second_size, proof = checkpoints.consistency_proof(session, 300, None)
    assert second_size == 310
    assert verify_consistency(300, 310, bytes.fromhex(first.root), bytes.fromhex(second.root),
                              [bytes.fromhex(p) for p in proof])
    stored = session.scalar(select(LedgerTree.hash).where(LedgerTree.level == 8, LedgerTree.idx == 0))
    assert bytes(stored) == tree.nodes[(8, 0)]
    with pytest.raises(NotFound, match="covers the first 310"):
        checkpoints.inclusion_proof(session, 1, 311)
    with pytest.raises(BadRequest):
        checkpoints.consistency_proof(session, 311, 310)


def test_a_tree_built_in_small_steps_equals_one_built_at_once(session: Session) -> None:
    grow(session, 100)
    assert checkpoints.extend_tree(session, batch=7) == 102
    assert root_of(102, checkpoints.lookup(session)) == reference(session).root()


def test_orgs_cosign_a_checkpoint_once_with_their_own_key(session: Session) -> None:
    identity = OrgIdentity.from_private_key("north", Ed25519PrivateKey.generate())
    org = Org(name="north", public_key=identity.public_key_b64, key_id=identity.key_id)
    session.add(org)
    session.commit()
    made = checkpoints.maybe_checkpoint(session, NOW, every=64, interval_s=10, force=True)
    assert made is not None
    note = Checkpoint(made.origin, made.size, made.root, made.created_at, made.key_id, made.signature).note
    north = Principal(kind="org", name="north", role=Role.steward, org_id=org.id, org_name="north")
    with pytest.raises(BadRequest):
        checkpoints.cosign(session, north, made.size, OrgIdentity.from_private_key(
            "north", Ed25519PrivateKey.generate()).sign(note), NOW)
    user = Principal(kind="user", name="n", role=Role.steward, org_id=org.id, org_name="north")
    with pytest.raises(Forbidden):
        checkpoints.cosign(session, user, made.size, identity.sign(note), NOW)
    row = checkpoints.cosign(session, north, made.size, identity.sign(note), NOW)
    again = checkpoints.cosign(session, north, made.size, identity.sign(note), NOW)
    assert row.id == again.id
    [(checkpoint, cosigned)] = checkpoints.with_cosignatures(session, [made])
    assert [c[:2] for c in cosigned] == [("north", identity.key_id)]
    with pytest.raises(NotFound):
        checkpoints.cosign(session, north, made.size + 5, identity.sign(note), NOW)
