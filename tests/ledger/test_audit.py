"""The one-pass audit: every kind of tampering is found in each of 1,000 seeded random trials, clean ledgers
(with random redactions) never raise an alarm, and the report names where the ledger first goes wrong."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consortium.bench.ledger_build import VOTE, build_ledger, checkpoints_of
from consortium.crypto import OrgIdentity
from consortium.ledger.audit import AuditReport, Claim, audit
from consortium.ledger.chain import ChainedEntry, ChainHead, append, expected_hash, payload_commitment, redact
from consortium.ledger.checkpoint import Checkpoint
from consortium.ledger.signatures import hub_key_payload, sign_entry


def key(name: str, seed: int) -> OrgIdentity:
    return OrgIdentity.from_private_key(name, Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


HUB, MALLORY = key("hub", 1), key("mallory", 9)
ORGS = [key("north", 2), key("south", 3)]
HUB_ID = "ab" * 16
N, EVERY, TRIALS = 12, 4, 1000
BASES = [build_ledger(N, HUB, ORGS, random.Random(seed), HUB_ID, EVERY) for seed in range(8)]
KEYED = 2 + len(ORGS)
"""Entries that announce keys (hub.key, hub.created, one enrolment per org): never redacted for members."""


def head(entries: list[ChainedEntry]) -> ChainHead:
    return ChainHead(entries[-1].seq, entries[-1].hash) if entries else ChainHead(0, "0" * 64)


def run(entries, hub_head, hub_cps: list[Checkpoint], node_cps: list[Checkpoint] = ()) -> AuditReport:
    claims = [Claim(c, "hub") for c in hub_cps] + [Claim(c, "node", (("north", ORGS[0].key_id,
                                                                       ORGS[0].sign(c.note)),)) for c in node_cps]
    return audit(iter(entries), hub_head, claims)


def rehashed(entry: ChainedEntry, **changes) -> ChainedEntry:
    changed = replace(entry, **changes)
    if "payload" in changes:
        changed = replace(changed, payload_commitment=payload_commitment(changed.payload, changed.salt))
    return replace(changed, hash=expected_hash(changed))


def relinked(entries: list[ChainedEntry], start: int, signer: OrgIdentity | None) -> list[ChainedEntry]:
    """Entries from ``start`` on re-chained after an edit (and re-signed by ``signer``, if given)."""
    out = entries[:start + 1]
    for entry in entries[start + 1:]:
        entry = rehashed(entry, prev_hash=out[-1].hash)
        out.append(sign_entry(entry, signer.key_id, signer.sign) if signer else entry)
    return out


def hex_of(rng: random.Random, n: int = 64) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


FIELDS: dict[str, Callable[[ChainedEntry, random.Random], object]] = {
    "event_type": lambda e, r: e.event_type + ".x",
    "actor": lambda e, r: e.actor + "x",
    "created_at": lambda e, r: "2027-06-01T00:00:00.000000+00:00",
    "payload": lambda e, r: {**e.payload, "tampered": r.random()},
    "prev_hash": lambda e, r: hex_of(r),
    "hash": lambda e, r: hex_of(r),
    "salt": lambda e, r: hex_of(r, 32),
    "payload_commitment": lambda e, r: hex_of(r),
    "signature": lambda e, r: HUB.sign(b"something else"),
    "signer_key_id": lambda e, r: hex_of(r, 16),
    "actor_key_id": lambda e, r: ORGS[1].key_id if e.actor_key_id == ORGS[0].key_id else ORGS[0].key_id,
    "actor_signature": lambda e, r: ORGS[0].sign(b"something else"),
    "seq": lambda e, r: e.seq + r.randint(1, 5),
}


def edited_field(r: random.Random, base) -> tuple:
    entries = list(base.entries)
    i = r.randrange(N)
    name = r.choice(list(FIELDS))
    entries[i] = replace(entries[i], **{name: FIELDS[name](entries[i], r)})
    return (entries, head(base.entries), base.checkpoints), i + 1


def edited_and_rehashed(r: random.Random, base) -> tuple:
    i = r.randrange(KEYED, N)
    entries = list(base.entries)
    entries[i] = rehashed(entries[i], payload={**entries[i].payload, "tampered": r.random()})
    if r.random() < 0.5:
        entries = relinked(entries, i, None)
    return (entries, head(entries), base.checkpoints), i + 1


def deleted(r: random.Random, base) -> tuple:
    i = r.randrange(N)
    return (base.entries[:i] + base.entries[i + 1:], head(base.entries), base.checkpoints), i + 1


def swapped(r: random.Random, base) -> tuple:
    i, j = sorted(r.sample(range(N), 2))
    entries = list(base.entries)
    entries[i], entries[j] = entries[j], entries[i]
    return (entries, head(base.entries), base.checkpoints), i + 1


def forged_append(r: random.Random, base) -> tuple:
    """Someone who can write the database but lacks the hub key appends (and moves the head along)."""
    last = base.entries[-1]
    salt = hex_of(r, 32)
    how = r.randrange(4)
    if how == 3:
        announce = sign_entry(append(last, "hub.key", "hub", hub_key_payload(MALLORY.public_key_b64), last.created_at,
                                     salt), MALLORY.key_id, MALLORY.sign)
        forged = sign_entry(append(announce, "org.admitted", "hub", {"org": "mallory"}, last.created_at, salt),
                            MALLORY.key_id, MALLORY.sign)
        entries = [*base.entries, announce, forged]
    else:
        forged = append(last, "org.admitted", "hub", {"org": "mallory"}, last.created_at, salt)
        if how == 1:
            forged = sign_entry(forged, MALLORY.key_id, MALLORY.sign)
        elif how == 2:
            forged = sign_entry(forged, HUB.key_id, MALLORY.sign)
        entries = [*base.entries, forged]
    return (entries, head(entries), base.checkpoints), N + 1


def truncated(r: random.Random, base) -> tuple:
    """The hub cuts its tail consistently (head and its own checkpoints too); a node kept a cosigned one."""
    keep = r.randrange(0, N)
    entries = base.entries[:keep]
    ours = [c for c in base.checkpoints if c.size <= keep]
    return (entries, head(entries), ours, base.checkpoints), None


def consistent_rewrite(r: random.Random, base) -> tuple:
    """The hub, holding its own key, edits an entry and re-hashes, re-signs and re-checkpoints everything after."""
    i = r.choice([k for k, e in enumerate(base.entries) if k >= KEYED and e.event_type != VOTE])
    entries = list(base.entries)
    entries[i] = sign_entry(rehashed(entries[i], payload={**entries[i].payload, "x": r.random()}), HUB.key_id,
                            HUB.sign)
    entries = relinked(entries, i, HUB)
    ours = checkpoints_of(entries, HUB, HUB_ID, EVERY)
    assert run(entries, head(entries), ours).ok  # the hub's own view stays consistent
    return (entries, head(entries), ours, base.checkpoints), None


ATTACKS = {f.__name__: f for f in (edited_field, edited_and_rehashed, deleted, swapped, forged_append,
                                   truncated, consistent_rewrite)}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_every_tampering_is_found_in_1000_random_trials(attack: str) -> None:
    rng = random.Random(attack)
    found = 0
    for _ in range(TRIALS):
        base = BASES[rng.randrange(len(BASES))]
        args, seq = ATTACKS[attack](rng, base)
        report = run(*args)
        assert not report.ok, (attack, args[0])
        if seq is not None and attack != "edited_field":
            assert report.first_bad_seq == seq, (attack, report)
        if attack in ("truncated", "consistent_rewrite"):
            assert report.bad_checkpoint is not None and report.reason and "(node)" in report.reason, report
        found += 1
    assert found == TRIALS


def test_edited_fields_are_named_at_their_entry() -> None:
    rng = random.Random(7)
    for name, change in FIELDS.items():
        for base in BASES[:2]:
            for i in range(N):
                entries = list(base.entries)
                entries[i] = replace(entries[i], **{name: change(entries[i], rng)})
                report = run(entries, head(base.entries), base.checkpoints)
                assert not report.ok and report.reason
                if name != "seq":
                    assert report.first_bad_seq == i + 1, (name, i, report)


def test_clean_ledgers_with_random_redactions_raise_no_alarm() -> None:
    rng = random.Random("clean")
    for _ in range(TRIALS):
        base = BASES[rng.randrange(len(BASES))]
        shown = [redact(e) if i >= KEYED and rng.random() < 0.5 else e for i, e in enumerate(base.entries)]
        report = run(shown, head(shown), base.checkpoints, base.checkpoints)
        assert report.ok and report.checked == N and report.checkpoints == 2 * len(base.checkpoints), report


def test_a_checkpoint_with_a_bad_cosignature_or_origin_is_named() -> None:
    base = BASES[0]
    cp = base.checkpoints[0]
    bad = Claim(cp, "node", (("north", ORGS[0].key_id, ORGS[1].sign(cp.note)),))
    report = audit(iter(base.entries), head(base.entries), [bad])
    assert (report.ok, report.bad_checkpoint) == (False, cp.size) and "cosignature of north" in report.reason
    other = Checkpoint.from_json({**cp.to_json(), "origin": "cd" * 16})
    report = audit(iter(base.entries), head(base.entries), [Claim(other, "file")])
    assert not report.ok and "not signed by a hub key" in report.reason


def test_an_org_may_cosign_a_checkpoint_made_before_its_enrolment() -> None:
    base = BASES[0]
    early = checkpoints_of(base.entries[:2], HUB, HUB_ID, 2)[0]
    claim = Claim(early, "hub", (("north", ORGS[0].key_id, ORGS[0].sign(early.note)),))
    report = audit(iter(base.entries), head(base.entries), [claim])
    assert report.ok and report.checkpoints == 1, report.reason
