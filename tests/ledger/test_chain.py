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
    LedgerEvent,
    append,
    entry_hash,
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
    assert (report.ok, report.first_bad_seq, report.checked) == (False, 6, 4)
    assert report.reason == "seq 6 follows 4 (gap or reorder)"
    assert report.head_hash == chain[3].hash

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
    assert report.first_bad_seq == 2 and report.reason == "seq 2 follows 0 (gap or reorder)"


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
    expected: int | None = k

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
        expected = k + 1 if k < n else None
    elif kind == "swap":
        tampered[i], tampered[i + 1] = tampered[i + 1], tampered[i]
        expected = k + 1

    report = verify_chain(iter(tampered))
    if expected is None:
        assert report.ok and report.checked == n - 1, "deleting the last entry is tail truncation"
        return
    assert not report.ok
    assert report.first_bad_seq == expected, report.reason
    assert report.checked == k - 1
    assert str(expected) in report.reason
