"""The safetensors header parser: what the library writes always parses; anything else is a clear ValueError."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load

from consortium.codec import decode_update, encode_tensors, safetensors_metadata
from consortium.tensor_header import MAX_HEADER_BYTES, parse_header


def payload(header: bytes | str, data: bytes = b"") -> bytes:
    raw = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(raw)) + raw + data


names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12).filter(
    lambda n: n != "__metadata__")
shapes = st.lists(st.integers(0, 4), max_size=3)
metadata = st.dictionaries(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8),
                           st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30),
                           max_size=4)


@settings(max_examples=150, deadline=None)
@given(tensors=st.dictionaries(names, shapes, max_size=4), meta=metadata)
def test_what_safetensors_writes_parses_back(tensors: dict, meta: dict) -> None:
    data = encode_tensors({name: torch.zeros(shape) for name, shape in tensors.items()}, meta or None)
    header = parse_header(data)
    assert header.metadata == meta
    assert set(header.tensors) == set(tensors)
    for name, shape in tensors.items():
        assert header.tensors[name].shape == tuple(shape) and header.tensors[name].dtype == "F32"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_value_error(data: bytes) -> None:
    try:
        parse_header(data)
    except ValueError as exc:
        assert "not a valid safetensors payload" in str(exc)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_header_is_accepted_only_if_the_library_accepts_it(value: object) -> None:
    """On the header's JSON the parser is no more lenient than safetensors itself (whether the tensors' bytes
    fit their dtypes and shapes is the library's to check when it loads them)."""
    data = payload(json.dumps(value))
    try:
        parse_header(data)
    except ValueError:
        return
    st_load(data)


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x01\x00", "shorter than its header length"),
    (payload("[]"), "must be a JSON object, not list"),
    (payload('"x"'), "must be a JSON object, not str"),
    (payload("7"), "must be a JSON object, not int"),
    (payload("[" * 100_000 + "]" * 100_000), "depth"),
    (payload('{"a": {"b": {"c": {"d": 1}}}}'), "depth"),
    (payload("{"), "not strict JSON"),
    (payload('{"__metadata__": {"a": NaN}}'), "NaN"),
    (payload('{"__metadata__": [], "x": 1}'), "__metadata__ must be an object of strings"),
    (payload('{"__metadata__": {"a": 1}}'), "__metadata__ must be an object of strings"),
    (payload('{"__metadata__": {"a": "b"}, "__metadata__": {}}'), "twice"),
    (payload('{"t": 1}'), "tensor 't' must be an object"),
    (payload('{"t": {"dtype": "F32", "shape": [1]}}'), "exactly dtype, shape and data_offsets"),
    (payload('{"t": {"dtype": "f32", "shape": [1], "data_offsets": [0, 4]}}', bytes(4)), "malformed dtype"),
    (payload('{"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', bytes(4)), "shape"),
    (payload('{"t": {"dtype": "F32", "shape": [true], "data_offsets": [0, 4]}}', bytes(4)), "shape"),
    (payload('{"t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}', bytes(4)), "outside"),
    (payload('{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}', bytes(4)), "outside"),
    (struct.pack("<Q", 2**63) + b"{}", "exceeds the 2 bytes"),
    (struct.pack("<Q", MAX_HEADER_BYTES + 1) + b" " * (MAX_HEADER_BYTES + 1), "exceeds the limit"),
])
def test_malformed_headers_are_a_value_error_that_says_why(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match="not a valid safetensors payload") as caught:
        safetensors_metadata(data)
    assert reason in str(caught.value)


def test_update_metadata_must_be_strict_json() -> None:
    data = encode_tensors({"w": torch.zeros(2)}, {"update": '{"num_examples": 1, "compute_s": NaN}'})
    with pytest.raises(ValueError, match="NaN"):
        decode_update(data)
