"""Strict JSON: standard JSON round-trips unchanged; what no peer or database agrees on is refused."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.strict_json import StrictJSONError, loads

storable_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | storable_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(storable_text, inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_standard_json_round_trips(value: object) -> None:
    assert loads(json.dumps(value)) == value
    assert loads(json.dumps(value, ensure_ascii=False).encode()) == value


@pytest.mark.parametrize(("text", "reason"), [
    ('{"lr": NaN}', "NaN is not a JSON number"),
    ("[Infinity]", "Infinity is not a JSON number"),
    ('{"a": -Infinity}', "-Infinity is not a JSON number"),
    ("1e400", "too large for a 64-bit float"),
    ('{"a": 1, "a": 2}', "appears twice"),
    ('"\\u0000"', "NUL"),
    ('{"\\u0000": 1}', "NUL"),
    ('"\\udc00"', "surrogates"),
    ("[" * 65 + "]" * 65, "deeper than 64"),
    ("[" * 100_000, "deeper than 64"),
    ("{", "Expecting"),
])
def test_refusals_say_why(text: str, reason: str) -> None:
    with pytest.raises(StrictJSONError) as caught:
        loads(text)
    assert reason in caught.value.msg
    assert isinstance(caught.value, json.JSONDecodeError)


def test_the_position_of_a_constant_is_reported() -> None:
    with pytest.raises(StrictJSONError) as caught:
        loads('{"name": "NaN", "lr": NaN}')
    assert caught.value.pos == 22


def test_nesting_up_to_the_limit_is_fine() -> None:
    assert loads("[" * 64 + "]" * 64) is not None
    assert loads('{"a": {"b": 1}}', max_depth=2) == {"a": {"b": 1}}
    with pytest.raises(StrictJSONError):
        loads('{"a": {"b": []}}', max_depth=2)


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(StrictJSONError) as caught:
        loads(b'"\xff"')
    assert "not UTF-8" in caught.value.msg
