"""Signed ledgers made straight from the pure functions (no hub): the tamper trials' material and the verify
benchmark's million entries.

:func:`build_ledger` writes what a hub would: ``hub.key``, ``hub.created``, one ``node.enrolled`` per org
(with its public key), then a mix of hub events and org-signed votes, every entry sealed with a salt from
``rng`` and signed by ``hub``, and a checkpoint every ``checkpoint_every`` entries.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from consortium.crypto import OrgIdentity
from consortium.ledger.chain import ChainedEntry, append
from consortium.ledger.checkpoint import Checkpoint, sign_checkpoint
from consortium.ledger.merkle import CompactRange, entry_leaf
from consortium.ledger.signatures import actor_message, hub_key_payload, sign_entry

T0 = datetime(2026, 1, 1, tzinfo=UTC)
VOTE = "vote.cast"


@dataclass
class Built:
    """A ledger and the hub's checkpoints of it."""

    entries: list[ChainedEntry] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)


def stamp(i: int) -> str:
    return (T0 + timedelta(milliseconds=i)).isoformat(timespec="microseconds")


def iter_ledger(
    n: int, hub: OrgIdentity, orgs: list[OrgIdentity], rng: random.Random, hub_id: str,
    checkpoint_every: int = 0, vote_share: float = 0.25,
) -> Iterator[tuple[ChainedEntry, Checkpoint | None]]:
    """``n`` entries (at least 2 + len(orgs)) one at a time, each with the checkpoint made right after it."""
    tree = CompactRange()
    head: ChainedEntry | None = None
    fixed = [("hub.key", "hub", hub_key_payload(hub.public_key_b64), None),
             ("hub.created", "hub", {"hub_id": hub_id}, None)]
    fixed += [("node.enrolled", f"org:{o.org}", {"org": o.org, "node": "n1", "key_id": o.key_id,
                                                 "public_key": o.public_key_b64}, None) for o in orgs]
    for i in range(n):
        if i < len(fixed):
            event_type, actor, payload, voter = fixed[i]
        elif orgs and rng.random() < vote_share:
            voter = orgs[rng.randrange(len(orgs))]
            event_type, actor = VOTE, f"org:{voter.org}"
            payload = {"proposal_id": rng.randrange(1, 1000), "vote": rng.choice(["yes", "no", "abstain"])}
        else:
            voter = None
            event_type, actor, payload = "run.started", "hub", {"run_id": i, "x": rng.random()}
        salt = rng.getrandbits(128).to_bytes(16, "big").hex()
        entry = append(head, event_type, actor, payload, stamp(i), salt,
                       actor_key_id=voter.key_id if voter is not None else None)
        if voter is not None:
            entry = replace(entry, actor_signature=voter.sign(actor_message(event_type, payload)))
        entry = sign_entry(entry, hub.key_id, hub.sign)
        tree.append(entry_leaf(entry.hash))
        made = None
        if checkpoint_every and tree.size % checkpoint_every == 0:
            made = sign_checkpoint(hub_id, tree.size, tree.root(), stamp(i), hub.key_id, hub.sign)
        head = entry
        yield entry, made


def build_ledger(
    n: int, hub: OrgIdentity, orgs: list[OrgIdentity], rng: random.Random, hub_id: str,
    checkpoint_every: int = 0,
) -> Built:
    """:func:`iter_ledger` in memory."""
    built = Built()
    for entry, made in iter_ledger(n, hub, orgs, rng, hub_id, checkpoint_every):
        built.entries.append(entry)
        if made is not None:
            built.checkpoints.append(made)
    return built


def checkpoints_of(
    entries: list[ChainedEntry], hub: OrgIdentity, hub_id: str, every: int
) -> list[Checkpoint]:
    """Checkpoints every ``every`` entries of ``entries``, signed by ``hub`` (a hub re-signing a rewrite)."""
    tree = CompactRange()
    made = []
    for entry in entries:
        tree.append(entry_leaf(entry.hash))
        if tree.size % every == 0:
            made.append(sign_checkpoint(hub_id, tree.size, tree.root(), entry.created_at, hub.key_id,
                                        hub.sign))
    return made
