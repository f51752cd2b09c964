"""String categories as stable codes: the same text gives the same code everywhere, exact in float32; two texts
with one code are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consortium.fl.categories import code_of, encode, merge_labels
from consortium.fl.core import FLError


@given(st.text(min_size=1, max_size=50))
def test_a_code_is_a_whole_number_below_2_24_exact_in_float32(text):
    code = code_of(text)
    assert code == int(code) and 0 <= code < 2**24
    assert float(np.float32(code)) == code
    assert code_of(text) == code


def _colliding_pair() -> tuple[str, str]:
    seen: dict[float, str] = {}
    for i in range(200_000):
        text = f"c{i}"
        other = seen.setdefault(code_of(text), text)
        if other != text:
            return other, text
    raise AssertionError("no collision found")


def test_encode_gives_codes_and_texts_missing_as_nan_and_refuses_a_shared_code():
    codes, labels = encode(["red", "", "blue", "red"], "f.csv: column 'colour'")
    assert codes.dtype == np.float32 and np.isnan(codes[1])
    assert codes[0] == codes[3] == code_of("red") and labels == {code_of("red"): "red", code_of("blue"): "blue"}
    first, second = _colliding_pair()
    with pytest.raises(FLError, match=f"column 'colour': categories '{first}' and '{second}' have the same code"):
        encode([first, second], "f.csv: column 'colour'")
    with pytest.raises(FLError, match="have the same code"):
        merge_labels([{code_of(first): first}, {code_of(first): second}], "preprocessing")
    assert merge_labels([{1.0: "a"}, {1.0: "a", 2.0: "b"}], "x") == {1.0: "a", 2.0: "b"}
