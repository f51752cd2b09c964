"""Tables: reading and checking data files, and the canonical hash of their rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from consortium.fl.categories import code_of
from consortium.node.registry import parse_schema_option
from consortium.protocol import ColumnSchema, DatasetSchema
from consortium.table_hash import canonical_sha256, schema_header
from consortium.tables import DatasetError, load_table


def _numeric(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=["ward"])



# ---------------------------------------------------------------------------------------------- round trips


def test_csv_and_parquet_round_trip_with_the_same_hash(tmp_path, table):
    csv, parquet = tmp_path / "t.csv", tmp_path / "t.parquet"
    table.to_csv(csv, index=False)
    table.to_parquet(parquet, index=False)
    a, b = load_table(csv, "label"), load_table(parquet, "label")
    assert (a.format, b.format) == ("csv", "parquet")
    assert a.rows == b.rows == len(table)
    assert a.schema == b.schema
    assert [(c.name, c.dtype) for c in a.schema.features] == [
        *[(f"px{i}", "float64") for i in range(6)],
        ("weight", "float64"),
        ("count", "int64"),
        ("smoker", "bool"),
        ("ward", "string"),
    ]
    assert a.schema.target == ColumnSchema(name="label", dtype="int64")
    assert a.sha256 == b.sha256
    assert len(a.sha256) == 64
    assert a.columns["ward"][-1] == "Zürich ☃"


def test_hash_is_the_documented_canonical_form(tmp_path):
    path = tmp_path / "small.csv"
    path.write_text("a,s,b,y\n1.5,x,True,1\n-2.0,yz,False,0\n")
    loaded = load_table(path, "y")
    expected = hashlib.sha256(
        json.dumps(
            loaded.schema.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":")
        ).encode()
        + np.array([1.5, -2.0], dtype="<f8").tobytes()
        + b"x\x00yz\x00"
        + bytes([1, 0])
        + np.array([1, 0], dtype="<i8").tobytes()
    ).hexdigest()
    assert loaded.sha256 == expected
    assert schema_header(loaded.schema).startswith(b'{"features":[{"dtype":"float64","name":"a"}')


def test_hash_changes_with_data_schema_and_target(tmp_path, table):
    numeric = _numeric(table)
    base = tmp_path / "base.csv"
    numeric.to_csv(base, index=False)
    changed = numeric.copy()
    changed.loc[10, "weight"] += 1e-9
    (tmp_path / "changed.csv").write_text(changed.to_csv(index=False))
    reference = load_table(base, "label").sha256
    assert load_table(tmp_path / "changed.csv", "label").sha256 != reference
    assert load_table(base, None).sha256 != reference
    assert load_table(base, "count").sha256 != reference


def test_nan_is_canonical(tmp_path):
    schema = DatasetSchema(features=[ColumnSchema(name="a", dtype="float64")])
    payload_nan = np.frombuffer(np.uint64(0x7FF800000000BEEF).tobytes(), dtype=np.float64)
    assert canonical_sha256(schema, {"a": np.array([np.nan])}) == canonical_sha256(schema, {"a": payload_nan})


def test_npz_round_trip_keeps_shapes_and_float32(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path / "digits.npz"
    np.savez(
        path, image=digits.images[:50].astype(np.float32), scale=np.arange(50.0), target=digits.target[:50]
    )
    loaded = load_table(path, "target")
    assert loaded.format == "npz"
    assert loaded.rows == 50
    assert [(c.name, c.dtype, c.shape) for c in loaded.schema.features] == [
        ("image", "float32", [8, 8]),
        ("scale", "float64", None),
    ]
    assert loaded.schema.target == ColumnSchema(name="target", dtype="int64")
    data = loaded.to_local_data()
    assert data.x.shape == (50, 65) and data.x.dtype == torch.float32
    assert torch.equal(
        data.x[:, :64], torch.from_numpy(digits.images[:50].reshape(50, 64).astype(np.float32))
    )
    assert data.y.dtype == torch.int64 and data.y.tolist() == digits.target[:50].tolist()
    assert load_table(path, "target", declared=loaded.schema).sha256 == loaded.sha256


def test_npz_problems(tmp_path):
    ragged = tmp_path / "ragged.npz"
    np.savez(ragged, a=np.zeros((5, 2)), target=np.zeros(4))
    with pytest.raises(DatasetError, match=r"ragged\.npz: arrays have different numbers of rows"):
        load_table(ragged, "target")
    objects = tmp_path / "objects.npz"
    np.savez(objects, a=np.array([{"x": 1}, None], dtype=object))
    with pytest.raises(DatasetError, match="Python objects"):
        load_table(objects, None)
    shaped = tmp_path / "shaped.npz"
    np.savez(shaped, a=np.zeros((5, 2)))
    declared = DatasetSchema(features=[ColumnSchema(name="a", dtype="float64", shape=[3])])
    with pytest.raises(
        DatasetError, match=r"column 'a' is declared with shape \[3\] but the file has shape \[2\]"
    ):
        load_table(shaped, None, declared)


# ---------------------------------------------------------------------------------------------- errors


def test_unknown_suffix_missing_and_empty_files(tmp_path):
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DatasetError, match=r"data\.xlsx: unsupported file type '\.xlsx'"):
        load_table(tmp_path / "data.xlsx", None)
    with pytest.raises(DatasetError, match="no such file"):
        load_table(tmp_path / "absent.csv", None)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DatasetError, match=r"empty\.csv: the file is empty"):
        load_table(tmp_path / "empty.csv", None)
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(DatasetError, match=r"header\.csv: the file has no rows"):
        load_table(tmp_path / "header.csv", None)
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"empty\.parquet"):
        load_table(tmp_path / "empty.parquet", None)


def test_missing_target_names_the_columns(tmp_path, table):
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    with pytest.raises(
        DatasetError, match=r"t\.csv: target column 'diagnosis' not in file; columns: px0, px1"
    ):
        load_table(path, "diagnosis")


def test_declared_schema_missing_and_extra_columns(tmp_path, table):
    path = tmp_path / "t.csv"
    _numeric(table).to_csv(path, index=False)
    declared = parse_schema_option(
        "px0:float64,px1:float64,px2:float64,px3:float64,px4:float64,px5:float64,height:float64,label:int64",
        "label",
    )
    with pytest.raises(DatasetError) as info:
        load_table(path, "label", declared)
    message = str(info.value)
    assert "declared column(s) 'height' missing from the file" in message
    assert "column(s) 'weight', 'count', 'smoker' in the file are not in the declared schema" in message


def test_string_in_a_declared_float_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n1.0,2,0\n2.5,oops,1\n3.0,4,0\n")
    declared = parse_schema_option("a:float64,b:float64,y:int64", "y")
    with pytest.raises(
        DatasetError,
        match=r"t\.csv: column 'b' is declared float64 but found string values \(e\.g\. 'oops' in row 2\)",
    ):
        load_table(path, "y", declared)


def test_float_in_a_declared_int_column(tmp_path, table):
    frame = _numeric(table)
    frame["count"] = frame["count"].astype(float)
    frame.loc[4, "count"] = 2.5
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    declared = load_table(path, "label").schema.model_copy(deep=True)
    declared.features[7] = ColumnSchema(name="count", dtype="int64")
    with pytest.raises(
        DatasetError,
        match=r"column 'count' is declared int64 but found float values \(e\.g\. 2\.5 in row 5\)",
    ):
        load_table(path, "label", declared)


def test_other_type_mismatches(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,flag,y\n1,True,0\n2,False,\n")
    with pytest.raises(DatasetError, match="column 'flag' is declared float64 but found bool values"):
        load_table(path, None, parse_schema_option("a:float64,flag:float64,y:float64"))
    with pytest.raises(DatasetError, match="column 'y' is declared int64 but has a missing value in row 2"):
        load_table(path, "y", parse_schema_option("a:int64,flag:bool,y:int64", "y"))
    with pytest.raises(DatasetError, match="target column 'y' given but the declared schema's target is 'a'"):
        load_table(path, "y", parse_schema_option("a:int64,flag:bool,y:float64", "a"))


def test_declared_schema_accepts_ints_in_float_columns_and_keeps_text(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("zip,score,y\n01234,1,0\n00042,2,1\n")
    declared = parse_schema_option("zip:string,score:float32,y:int64", "y")
    loaded = load_table(path, "y", declared)
    assert loaded.schema == declared
    assert loaded.columns["zip"].tolist() == ["01234", "00042"]
    assert loaded.columns["score"].dtype == np.float32


# ---------------------------------------------------------------------------------------------- tensors


def test_to_local_data_shapes_and_dtypes(tmp_path, table):
    path = tmp_path / "t.parquet"
    _numeric(table).to_parquet(path)
    data = load_table(path, "label").to_local_data()
    assert data.x.shape == (len(table), 9) and data.x.dtype == torch.float32
    assert data.x[:, 8].tolist() == table["smoker"].astype(float).tolist()
    assert data.y.dtype == torch.int64 and data.y.tolist() == table["label"].tolist()
    assert load_table(path, None).to_local_data().y is None


def test_to_local_data_target_kinds(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,integral,real\n1,1.0,0.5\n2,0.0,1.5\n")
    integral = load_table(path, "integral").to_local_data()
    assert integral.y.dtype == torch.int64 and integral.y.tolist() == [1, 0]
    real = load_table(path, "real").to_local_data()
    assert real.y.dtype == torch.float32 and real.y.tolist() == [0.5, 1.5]


def test_string_feature_must_be_encoded(tmp_path, table):
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    with pytest.raises(DatasetError, match="feature column 'ward' is a string; encode it numerically"):
        load_table(path, "label").to_local_data()


def test_declared_categorical_columns_enter_the_schema_and_its_hash(tmp_path):
    path = tmp_path / "w.csv"
    pd.DataFrame({"ward": ["x", "y", "x"], "a": [1.0, 2.0, 3.0], "label": [0, 1, 0]}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"feature column 'ward' is a string; .* \(--categorical ward\)"):
        load_table(path, "label").check_trainable()
    declared = load_table(path, "label", categorical=["ward"])
    declared.check_trainable()
    assert declared.schema.categorical == ["ward"]
    assert declared.sha256 != load_table(path, "label").sha256
    assert load_table(path, "label", declared=declared.schema).sha256 == declared.sha256, "read back as the node does"
    data = declared.to_local_data()
    x, y = code_of("x"), code_of("y")
    assert data.x[:, 0].tolist() == [x, y, x], "each category's stable code, for the one-hot encoding"
    assert declared.category_labels() == {"ward": {x: "x", y: "y"}}
    numeric = tmp_path / "n.csv"
    pd.DataFrame({"a": [1.0], "label": [0]}).to_csv(numeric, index=False)
    plain = load_table(numeric, "label")
    assert plain.schema.categorical is None and b"categorical" not in schema_header(plain.schema)


def test_a_column_no_dataset_schema_allows_is_a_dataset_error_naming_it(tmp_path: Path) -> None:
    """Found by atheris (tests/fuzz_corpus/table): a 300-character column name, or an npz array with an empty
    per-example shape, made load_table raise pydantic's ValidationError instead of DatasetError."""
    long = tmp_path / "long.csv"
    long.write_text("a," + "b" * 300 + "\n1,2\n")
    with pytest.raises(DatasetError, match=r"long.csv: ColumnSchema.name: String should have at most 200"):
        load_table(long, None)
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((3, 0), dtype=np.float32), y=np.arange(3))
    with pytest.raises(DatasetError, match=r"empty.npz: ColumnSchema.shape.0"):
        load_table(empty, "y")
