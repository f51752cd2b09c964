"""Hub test sets: checked with errors that say what is wrong, made from tables, bundled with a spec."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from consortium.codec import encode_tensors
from consortium.protocol import ProjectCreate
from consortium.tables import load_table
from consortium.test_sets import TestSetError, bundle, check_test_set, file_kind, from_table, unbundle


def good(rows: int = 3, width: int = 4) -> bytes:
    return encode_tensors({"x": torch.zeros(rows, width), "y": torch.zeros(rows, dtype=torch.int64)})


@pytest.mark.parametrize(("payload", "kind"), [
    (b"a,b,label\n1,2,0\n", "a CSV file"),
    (b"PK\x03\x04rest", "a zip archive (an .npz file?)"),
    (b"PAR1rest", "a Parquet file"),
    (b'{"x": [1]}', "a JSON file"),
    (b"hello", "a text file"),
    (b"\xff\xfe\x00\x01\x02\x03\x04\x05\x06", "binary data of an unknown kind"),
])
def test_what_a_payload_that_is_not_safetensors_looks_like(payload: bytes, kind: str) -> None:
    assert file_kind(payload) == kind
    with pytest.raises(TestSetError, match=re.escape(f"the test set is {kind}, not a safetensors file")):
        check_test_set(payload, 4)


def test_a_good_test_set_passes_and_is_stored_canonically() -> None:
    with_metadata = encode_tensors({"x": torch.ones(3, 4), "y": torch.zeros(3, dtype=torch.int64)}, {"a": "b"})
    assert file_kind(with_metadata) is None
    checked = check_test_set(with_metadata, 4)
    assert checked.payload == encode_tensors({"x": torch.ones(3, 4), "y": torch.zeros(3, dtype=torch.int64)})
    assert checked.data.x.shape == (3, 4)


@pytest.mark.parametrize(("tensors", "message"), [
    ({"x": torch.zeros(3, 5), "y": torch.zeros(3)}, "x has 5 features per row, the project's datasets have 4"),
    ({"x": torch.zeros(3, 4, dtype=torch.float16), "y": torch.zeros(3)}, "x is float16, it must be float32"),
    ({"x": torch.zeros(3), "y": torch.zeros(3)}, r"x must be a matrix \[rows, 4 features\]"),
    ({"x": torch.zeros(3, 4), "y": torch.zeros(2)}, "y must be a vector of 3 labels"),
    ({"x": torch.full((3, 4), float("nan")), "y": torch.zeros(3)}, "NaN or infinite"),
    ({"features": torch.zeros(3, 4)}, "exactly the tensors 'x' and 'y'"),
])
def test_each_problem_is_named(tensors: dict, message: str) -> None:
    with pytest.raises(TestSetError, match=message):
        check_test_set(encode_tensors(tensors), 4)


def test_a_bundle_carries_the_spec_and_the_test_set_alone() -> None:
    spec_json = '{"name": "p"}'
    assert unbundle(bundle(spec_json, good())) == (spec_json, good())
    with pytest.raises(TestSetError, match="the test set is a CSV file"):
        bundle(spec_json, b"a,b\n1,2\n")
    with pytest.raises(TestSetError, match="carries no project spec"):
        unbundle(good())


def test_a_table_becomes_the_test_set_a_node_would_read(tmp_path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [0.5, 1.5], "b": [1, 2], "label": [0, 1]}).to_csv(path, index=False)
    made = from_table(load_table(path, "label"))
    np.testing.assert_array_equal(made.data.x.numpy(), np.array([[0.5, 1.0], [1.5, 2.0]], dtype=np.float32))
    assert made.data.y.tolist() == [0, 1]
    with pytest.raises(TestSetError, match="needs labels"):
        from_table(load_table(path, None))


def test_min_nodes_defaults_to_two_or_the_number_of_sources() -> None:
    base = {"name": "p", "algorithm": {"name": "classifier", "hyperparameters": {"layers": [2, 2]}}, "rounds": 1}
    assert ProjectCreate.model_validate({**base, "datasets": ["a/x", "b/x", "c/x"]}).min_nodes == 2
    assert ProjectCreate.model_validate({**base, "datasets": ["a/x"]}).min_nodes == 1
    assert ProjectCreate.model_validate({**base, "datasets": ["a/x", "b/x"], "min_nodes": 1}).min_nodes == 1
