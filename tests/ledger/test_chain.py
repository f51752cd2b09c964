"""The ledger hash chain: appending, verifying, and locating the first tampered entry."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.crypto import canonical_json, sha256_hex
from consortium.ledger.chain import (
    GENESIS_HASH,
    ChainedEntry,
    ChainHead,
    LedgerEvent,
    append,
    entry_hash,
    payload_commitment,
    redact,
    sealed_hash,
    verify_chain,
)

T0 = "2026-01-01T00:00:00.000000+00:00"


def build(payloads: list[dict]) -> list[ChainedEntry]:
    chain: list[ChainedEntry] = []
    for i, payload in enumerate(payloads):
        head = chain[-1] if chain else None
        created_at = f"2026-01-01T00:00:{i % 60:02d}+00:00"
        chain.append(append(head, "dataset.published", f"org-{i % 3}", payload, created_at))
    return chain


def test_empty_chain_is_ok() -> None:
    report = verify_chain([])
    assert report.ok and report.checked == 0 and report.first_bad_seq is None and report.reason is None
    assert report.head_hash == GENESIS_HASH


def test_append_links_and_numbers_entries() -> None:
    first = append(None, "org.admitted", "admin", {"org": "north"}, T0)
    second = append(first, "org.admitted", "admin", {"org": "south"}, T0)
    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert first.hash == entry_hash(GENESIS_HASH, first.event)
    assert first.event == LedgerEvent(1, "org.admitted", "admin", {"org": "north"}, T0)
    report = verify_chain([first, second])
    assert report.ok and report.checked == 2 and report.head_hash == second.hash


def test_entry_hash_is_sha256_of_canonical_json() -> None:
    event = LedgerEvent(3, "vote.cast", "north", {"b": 1, "a": "é"}, T0)
    expected = sha256_hex(canonical_json({"seq": 3, "event_type": "vote.cast", "actor": "north",
                                          "payload": {"a": "é", "b": 1}, "created_at": T0,
                                          "prev_hash": "ab" * 32}))
    assert entry_hash("ab" * 32, event) == expected


def test_append_stores_the_payload_as_json_returns_it() -> None:
    entry = append(None, "run.round", "hub", {"metrics": (1, 2), "nested": {"x": [0.5]}}, T0)
    assert entry.payload == {"metrics": [1, 2], "nested": {"x": [0.5]}}
    assert verify_chain([entry]).ok


@pytest.mark.parametrize(
    "payload", [{"loss": float("nan")}, {"loss": float("inf")}, {"blob": b"x"}, {"s": {1}}]
)
def test_append_rejects_non_json_payload(payload: dict) -> None:
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        append(None, "run.round", "hub", payload, T0)


@pytest.mark.parametrize(
    ("event_type", "actor", "payload", "created_at", "fragment"),
    [
        ("", "hub", {}, T0, "event_type"),
        ("x", "", {}, T0, "actor"),
        ("x", "hub", [1], T0, "JSON object"),
        ("x", "hub", {}, "yesterday", "ISO-8601"),
    ],
)
def test_append_validates_its_arguments(event_type, actor, payload, created_at, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        append(None, event_type, actor, payload, created_at)


def test_reasons_are_specific() -> None:
    chain = build([{"i": i} for i in range(8)])

    gap = chain[:4] + chain[5:]
    report = verify_chain(gap)
    assert (report.ok, report.first_bad_seq, report.checked) == (False, 5, 4)
    assert report.reason == "entry 5 is missing: the chain was cut after entry 4"
    assert report.head_hash == chain[3].hash

    report = verify_chain(chain[:2] + chain[5:])
    assert report.first_bad_seq == 3
    assert report.reason == "entries 3–5 are missing: the chain was cut after entry 2"

    renumbered = chain[:4] + [dataclasses.replace(chain[4], seq=6)]
    report = verify_chain(renumbered)
    assert report.first_bad_seq == 6 and report.reason == "seq 6 follows 4 (gap or reorder)"

    forged_after_gap = chain[:4] + [dataclasses.replace(chain[5], actor="mallory")]
    report = verify_chain(forged_after_gap)
    assert report.first_bad_seq == 5
    assert report.reason == ("entry 5 is missing: the chain was cut after entry 4; entry 6 after the gap "
                             "does not match its content either")

    relinked = list(chain)
    relinked[6] = dataclasses.replace(chain[6], prev_hash="f" * 64)
    report = verify_chain(relinked)
    assert report.first_bad_seq == 7
    assert report.reason == "prev_hash of entry 7 does not match the hash of entry 6"

    edited = list(chain)
    edited[6] = dataclasses.replace(chain[6], payload={"i": 999})
    report = verify_chain(edited)
    assert report.first_bad_seq == 7
    assert report.reason == "hash of entry 7 does not match its content"

    report = verify_chain([dataclasses.replace(chain[0], prev_hash="1" * 64)])
    assert report.first_bad_seq == 1 and "genesis" in report.reason

    report = verify_chain(chain[1:])
    assert report.first_bad_seq == 1
    assert report.reason == "entry 1 is missing: every entry before entry 2 was cut"
    assert report.checked == 0 and report.head_hash == GENESIS_HASH

    report = verify_chain(chain[7:])
    assert report.first_bad_seq == 1
    assert report.reason == "entries 1–7 are missing: every entry before entry 8 was cut"


def test_unhashable_or_mistyped_entries_are_reported_not_raised() -> None:
    chain = build([{"i": 0}, {"i": 1}])
    nan = dataclasses.replace(chain[1], payload={"x": float("nan")})
    report = verify_chain([chain[0], nan])
    assert not report.ok and report.first_bad_seq == 2 and "not canonical JSON" in report.reason

    report = verify_chain([dataclasses.replace(chain[0], seq=True)])
    assert not report.ok and report.first_bad_seq is None and "non-integer" in report.reason

    report = verify_chain([dataclasses.replace(chain[0], hash=None)])
    assert not report.ok and report.first_bad_seq == 1


def test_verify_streams_and_stops_at_the_first_bad_entry() -> None:
    chain = build([{"i": i} for i in range(50)])
    chain[9] = dataclasses.replace(chain[9], actor="mallory")
    consumed = 0

    def stream() -> Iterator[ChainedEntry]:
        nonlocal consumed
        for entry in chain:
            consumed += 1
            yield entry

    report = verify_chain(stream())
    assert report.first_bad_seq == 10 and consumed == 10


def test_tail_truncation_is_not_detectable_by_the_chain_alone() -> None:
    chain = build([{"i": i} for i in range(5)])
    report = verify_chain(chain[:3])
    assert report.ok and report.checked == 3
    assert report.head_hash == chain[2].hash != chain[4].hash


def head_of(chain: list[ChainedEntry]) -> ChainHead:
    return ChainHead(chain[-1].seq, chain[-1].hash) if chain else ChainHead(0, GENESIS_HASH)


def honest_append(head: ChainedEntry, i: int = 0) -> ChainedEntry:
    """What the hub appends next: it links to its recorded head, whatever the table still holds."""
    return append(head, "run.started", "hub", {"after": i}, T0)


@pytest.mark.parametrize("cut", [1, 100, 250])
def test_a_cut_tail_is_found_against_the_head(cut: int) -> None:
    chain = build([{"i": i} for i in range(250)])
    head = head_of(chain)
    assert verify_chain(chain, head).ok
    kept = chain[: len(chain) - cut]
    report = verify_chain(kept, head)
    assert not report.ok and report.first_bad_seq == len(kept) + 1 and report.checked == len(kept)
    if cut == 1:
        assert report.reason == "entry 250 is missing: the chain was cut after entry 249"
    elif cut == 100:
        assert report.reason == "entries 151–250 are missing: the chain was cut after entry 150"
    else:
        assert report.reason == "entries 1–250 are missing: every entry was cut"
        assert report.head_hash == GENESIS_HASH


@pytest.mark.parametrize("cut", [1, 100, 250])
def test_after_an_honest_append_the_cut_is_named_not_the_new_entry(cut: int) -> None:
    chain = build([{"i": i} for i in range(250)])
    new = honest_append(chain[-1])
    kept = chain[: len(chain) - cut] + [new]
    report = verify_chain(kept, head_of(chain + [new]))
    first_missing = 251 - cut
    assert not report.ok and report.first_bad_seq == first_missing, report.reason
    if cut == 250:
        assert report.reason == "entries 1–250 are missing: every entry before entry 251 was cut"
    else:
        assert report.reason.endswith(f"the chain was cut after entry {first_missing - 1}")
    assert verify_chain(kept).first_bad_seq == first_missing, "the gap alone names the cut too"


def test_the_head_may_be_older_than_the_chain_but_must_be_in_it() -> None:
    chain = build([{"i": i} for i in range(6)])
    assert verify_chain(chain, head_of(chain[:4])).ok, "entries appended after the head was read"
    assert verify_chain(chain, ChainHead(0, GENESIS_HASH)).ok
    assert verify_chain([], ChainHead(0, GENESIS_HASH)).ok

    rewritten = build([{"i": -i} for i in range(6)])
    report = verify_chain(rewritten, head_of(chain))
    assert report.first_bad_seq == 6 and "rewritten" in report.reason and report.checked == 5

    report = verify_chain(chain, ChainHead(0, "f" * 64))
    assert not report.ok and report.first_bad_seq is None and "not a chain head" in report.reason


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 40), sealed=st.booleans(), data=st.data())
def test_any_cut_against_the_head_is_reported_at_its_first_missing_seq(n: int, sealed: bool, data) -> None:
    """Plain chains, and sealed ones (after a plain prefix) as a reader outside some entries' audience sees
    them: redacted entries verify through their commitments, so a cut is found the same way."""
    if sealed:
        chain = build_sealed([{"i": i} for i in range(n)], plain_prefix=data.draw(st.integers(0, n)))
        hidden = data.draw(st.sets(st.integers(0, n - 1)), label="redacted")
        chain = [redact(e) if i in hidden and e.payload_commitment else e for i, e in enumerate(chain)]
    else:
        chain = build([{"i": i} for i in range(n)])
    assert verify_chain(iter(chain), head_of(chain)).ok
    k = data.draw(st.integers(0, n - 1), label="entries kept")
    report = verify_chain(iter(chain[:k]), head_of(chain))
    assert (report.ok, report.first_bad_seq, report.checked) == (False, k + 1, k)
    assert report.head_hash == (chain[k - 1].hash if k else GENESIS_HASH)

    salt = SALT if sealed else None
    appended = [append(chain[-1], "run.started", "hub", {"after": 0}, T0, salt=salt)]
    for i in range(data.draw(st.integers(0, 3), label="appends after the cut")):
        appended.append(append(appended[-1], "run.started", "hub", {"after": i + 1}, T0, salt=salt))
    report = verify_chain(iter(chain[:k] + appended), head_of(chain + appended))
    assert (report.ok, report.first_bad_seq, report.checked) == (False, k + 1, k), report.reason
    assert f"{k + 1}" in report.reason and "missing" in report.reason
    assert "not match" not in report.reason, "the honest entries after the cut verify"


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
payloads = st.dictionaries(st.text(max_size=6), json_scalars | st.lists(json_scalars, max_size=3), max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    chain_payloads=st.lists(payloads, min_size=1, max_size=15),
    kind=st.sampled_from(["payload", "actor", "created_at", "hash", "prev_hash", "delete", "swap"]),
    data=st.data(),
)
def test_any_single_tamper_is_located_at_the_first_bad_seq(chain_payloads, kind, data) -> None:
    chain = build(chain_payloads)
    assert verify_chain(iter(chain)).ok
    n = len(chain)
    if kind == "swap" and n < 2:
        kind = "payload"
    k = data.draw(st.integers(1, n - 1 if kind == "swap" else n), label="seq")
    i = k - 1
    entry = chain[i]
    tampered = list(chain)
    expected = k

    if kind == "payload":
        tampered[i] = dataclasses.replace(entry, payload={**entry.payload, "\x00tampered": True})
    elif kind == "actor":
        tampered[i] = dataclasses.replace(entry, actor=entry.actor + "x")
    elif kind == "created_at":
        tampered[i] = dataclasses.replace(entry, created_at="2030-01-01T00:00:00+00:00")
    elif kind == "hash":
        flipped = ("0" if entry.hash[0] != "0" else "1") + entry.hash[1:]
        tampered[i] = dataclasses.replace(entry, hash=flipped)
    elif kind == "prev_hash":
        flipped = ("0" if entry.prev_hash[0] != "0" else "1") + entry.prev_hash[1:]
        tampered[i] = dataclasses.replace(entry, prev_hash=flipped)
    elif kind == "delete":
        del tampered[i]
        if k == n:
            assert verify_chain(iter(tampered)).ok, "the chain alone cannot see a cut tail"
    elif kind == "swap":
        tampered[i], tampered[i + 1] = tampered[i + 1], tampered[i]

    report = verify_chain(iter(tampered), head_of(chain))
    assert not report.ok
    assert report.first_bad_seq == expected, report.reason
    assert report.checked == k - 1
    assert str(expected) in report.reason


# ------------------------------------------------------------------------------------------- sealed entries

SALT = "5a" * 16


def build_sealed(payloads: list[dict], plain_prefix: int = 0) -> list[ChainedEntry]:
    """A chain whose first ``plain_prefix`` entries are plain (an older ledger) and the rest sealed."""
    chain: list[ChainedEntry] = []
    for i, payload in enumerate(payloads):
        head = chain[-1] if chain else None
        salt = None if i < plain_prefix else f"{i:032x}"
        chain.append(append(head, "dataset.registered", f"org:o{i % 3}", payload, T0, salt=salt))
    return chain


def test_a_sealed_entry_commits_to_a_salted_digest_of_its_payload() -> None:
    entry = append(None, "dataset.registered", "org:north", {"dataset": "north/x", "rows": 5}, T0, salt=SALT)
    commitment = sha256_hex(bytes.fromhex(SALT) + canonical_json({"dataset": "north/x", "rows": 5}))
    assert entry.payload_commitment == commitment == payload_commitment(entry.payload, SALT)
    expected = sha256_hex(canonical_json({"seq": 1, "event_type": "dataset.registered", "actor": "org:north",
                                          "created_at": T0, "prev_hash": GENESIS_HASH,
                                          "payload_commitment": commitment}))
    assert entry.hash == expected
    assert entry.hash == sealed_hash(GENESIS_HASH, 1, "dataset.registered", "org:north", T0, commitment)
    assert entry.salt == SALT and verify_chain([entry]).ok


def test_the_salt_hides_a_guessable_payload() -> None:
    payload = {"dataset": "north/x"}
    assert payload_commitment(payload, SALT) != payload_commitment(payload, "a5" * 16)
    assert payload_commitment(payload, SALT) != sha256_hex(canonical_json(payload))


def test_a_redacted_entry_still_verifies_and_a_plain_one_cannot_be_redacted() -> None:
    chain = build_sealed([{"i": i} for i in range(4)], plain_prefix=2)
    hidden = chain[:2] + [redact(e) for e in chain[2:]]
    assert [e.payload for e in hidden[2:]] == [None, None] and hidden[3].salt is None
    assert hidden[3].payload_commitment == chain[3].payload_commitment
    report = verify_chain(hidden)
    assert report.ok and report.checked == 4 and report.head_hash == chain[-1].hash
    with pytest.raises(ValueError, match="plain entry"):
        redact(chain[0])


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"payload": {"i": 9}}, "payload of entry 2 does not match its commitment"),
        ({"salt": "00" * 16}, "payload of entry 2 does not match its commitment"),
        ({"salt": None}, "reveals its payload or its salt without the other"),
        ({"salt": "zz" * 16}, "salt must be 32 lower-case hex digits"),
        ({"salt": "5A" * 16}, "salt must be 32 lower-case hex digits"),
        ({"payload_commitment": "0" * 64}, "payload of entry 2 does not match its commitment"),
        ({"payload_commitment": "0" * 64, "payload": None, "salt": None}, "hash of entry 2 does not match"),
        ({"payload_commitment": None, "payload": None}, "neither a payload nor a payload commitment"),
    ],
)
def test_sealed_reasons_are_specific(change: dict, fragment: str) -> None:
    chain = build_sealed([{"i": 0}, {"i": 1}, {"i": 2}])
    chain[1] = dataclasses.replace(chain[1], **change)
    report = verify_chain(chain)
    assert not report.ok and report.first_bad_seq == 2 and report.checked == 1
    assert fragment in report.reason


@settings(max_examples=300, deadline=None)
@given(
    chain_payloads=st.lists(payloads, min_size=1, max_size=12),
    data=st.data(),
)
def test_any_redaction_verifies_and_tampering_is_located(chain_payloads, data) -> None:
    n = len(chain_payloads)
    plain = data.draw(st.integers(0, n), label="plain prefix")
    chain = build_sealed(chain_payloads, plain_prefix=plain)
    hidden = data.draw(st.sets(st.integers(plain, n - 1)) if plain < n else st.just(set()), label="redacted")
    shown = [redact(e) if i in hidden else e for i, e in enumerate(chain)]
    report = verify_chain(iter(shown))
    assert report.ok and report.checked == n and report.head_hash == chain[-1].hash

    i = data.draw(st.integers(0, n - 1), label="tampered")
    entry = shown[i]
    if entry.payload_commitment is None:
        tampered = dataclasses.replace(entry, payload={**entry.payload, "\x00tampered": True})
    elif i in hidden:
        flipped = ("0" if entry.payload_commitment[0] != "0" else "1") + entry.payload_commitment[1:]
        tampered = dataclasses.replace(entry, payload_commitment=flipped)
    elif data.draw(st.booleans(), label="payload or salt"):
        tampered = dataclasses.replace(entry, payload={**entry.payload, "\x00tampered": True})
    else:
        tampered = dataclasses.replace(entry, salt=("0" if entry.salt[0] != "0" else "1") + entry.salt[1:])
    report = verify_chain(iter(shown[:i] + [tampered] + shown[i + 1:]))
    assert not report.ok and report.first_bad_seq == i + 1 and report.checked == i, report.reason
