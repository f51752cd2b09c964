"""The node's local dataset layer: reading, checking, hashing and registering data files."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from consortium.node.store import (
    DatasetError,
    LocalRegistry,
    build_card,
    canonical_sha256,
    load_table,
    parse_schema_option,
    schema_header,
)
from consortium.protocol import ColumnSchema, DatasetCardIn, DatasetSchema


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """A small mixed-type table: digits pixels plus float, bool and string columns and an int label."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    n = 60
    frame = pd.DataFrame(digits.data[:n, :6], columns=[f"px{i}" for i in range(6)])
    rng = np.random.default_rng(0)
    frame["weight"] = rng.normal(size=n)
    frame["weight"] = frame["weight"].astype("float64")
    frame.loc[3, "weight"] = 1 / 3
    frame["count"] = rng.integers(-5, 5, size=n)
    frame["smoker"] = rng.random(n) > 0.5
    frame["ward"] = [f"ward-{i % 3}" for i in range(n - 1)] + ["Zürich ☃"]
    frame["label"] = digits.target[:n]
    return frame


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


# -------------------------------------------------------------------------------------------- cards, schemas


def test_build_card(tmp_path, table):
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    loaded = load_table(path, "label")
    card = build_card(loaded, "ward-visits", "CC-BY-4.0", description="visits", visibility="public")
    assert isinstance(card, DatasetCardIn)
    assert (card.rows, card.sha256, card.file_format, card.visibility) == (
        loaded.rows,
        loaded.sha256,
        "csv",
        "public",
    )
    assert card.schema_ == loaded.schema
    with pytest.raises(DatasetError, match=r"license 'CC BY 4\.0!' is not a valid SPDX license"):
        build_card(loaded, "ward-visits", "CC BY 4.0!")
    with pytest.raises(DatasetError, match="dataset name 'Ward Visits' is not valid"):
        build_card(loaded, "Ward Visits", "MIT")


def test_parse_schema_option():
    schema = parse_schema_option(" a:float64, img:float32[8,8] ,flag:bool,label:int64", "label")
    assert schema.features == [
        ColumnSchema(name="a", dtype="float64"),
        ColumnSchema(name="img", dtype="float32", shape=[8, 8]),
        ColumnSchema(name="flag", dtype="bool"),
    ]
    assert schema.target == ColumnSchema(name="label", dtype="int64")
    assert parse_schema_option("a:string").target is None
    for text, message in [
        ("a:float64,b", r"--schema entry 'b' is not 'name:dtype'"),
        ("a:double", r"unknown dtype 'double'; use one of int64, float64, float32, bool, string"),
        ("a:int64,a:float64", r"lists column 'a' twice"),
        ("a:int64[0]", r"positive dimensions"),
        ("", r"--schema is empty"),
    ]:
        with pytest.raises(DatasetError, match=message):
            parse_schema_option(text)
    with pytest.raises(DatasetError, match=r"target column 'y' is not in --schema; columns: a, b"):
        parse_schema_option("a:int64,b:int64", "y")
    with pytest.raises(DatasetError, match="no feature columns"):
        parse_schema_option("y:int64", "y")


# ---------------------------------------------------------------------------------------------- registry


def _register(tmp_path, frame: pd.DataFrame, name: str = "visits"):
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    loaded = load_table(path, "label")
    card = build_card(loaded, name, "MIT")
    registry = LocalRegistry(tmp_path / "org")
    registry.add(name, path, "label", card)
    return registry, path, card


def test_registry_add_get_all(tmp_path, table):
    registry, path, card = _register(tmp_path, _numeric(table))
    entry = registry.get("visits")
    assert entry.path == path.resolve() and entry.path.is_absolute()
    assert entry.target == "label" and entry.card == card
    assert "visits" in registry and "other" not in registry
    on_disk = json.loads((tmp_path / "org" / "datasets.json").read_text())
    assert on_disk["datasets"]["visits"]["card"]["schema"]["target"]["name"] == "label"
    assert sorted(os.listdir(tmp_path / "org")) == ["datasets.json", "datasets.json.lock"]

    second = tmp_path / "second.csv"
    _numeric(table).head(10).to_csv(second, index=False)
    card2 = build_card(load_table(second, "label"), "second", "MIT")
    LocalRegistry(tmp_path / "org").add("second", second, "label", card2)
    assert [e.name for e in registry.all()] == ["second", "visits"]
    with pytest.raises(DatasetError, match=r"no local dataset named 'nope'.*registered: second, visits"):
        registry.get("nope")
    with pytest.raises(DatasetError, match="does not match the registered name"):
        registry.add("third", second, "label", card2)


def test_registry_writes_are_atomic(tmp_path, table, monkeypatch):
    registry, _, card = _register(tmp_path, _numeric(table))
    before = (tmp_path / "org" / "datasets.json").read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    other = card.model_copy(update={"name": "other"})
    with pytest.raises(OSError, match="disk full"):
        registry.add("other", tmp_path / "visits.csv", "label", other)
    assert (tmp_path / "org" / "datasets.json").read_bytes() == before
    assert sorted(os.listdir(tmp_path / "org")) == ["datasets.json", "datasets.json.lock"]


def test_registry_concurrent_adds_lose_nothing(tmp_path, table):
    registry, path, card = _register(tmp_path, _numeric(table))
    names = [f"copy-{i}" for i in range(8)]
    threads = [
        threading.Thread(
            target=lambda n=n: LocalRegistry(tmp_path / "org").add(
                n, path, "label", card.model_copy(update={"name": n})
            )
        )
        for n in names
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {e.name for e in registry.all()} == {"visits", *names}


def test_load_local_verifies_and_caches(tmp_path, table):
    registry, path, _ = _register(tmp_path, _numeric(table))
    first = registry.load_local("visits")
    assert first.x.shape == (len(table), 9) and first.y.dtype == torch.int64
    assert registry.load_local("visits") is first

    changed = _numeric(table)
    changed.loc[0, "weight"] = 99.0
    changed.to_csv(path, index=False)
    with pytest.raises(
        DatasetError, match=r"dataset 'visits': .*visits\.csv changed since it was registered"
    ):
        registry.load_local("visits")

    _numeric(table).to_csv(path, index=False)
    restored = registry.load_local("visits")
    assert torch.equal(restored.x, first.x)

    path.unlink()
    with pytest.raises(DatasetError, match="no longer exists"):
        registry.load_local("visits")


def test_load_local_detects_a_schema_change(tmp_path, table):
    registry, path, _ = _register(tmp_path, _numeric(table))
    _numeric(table).drop(columns=["smoker"]).to_csv(path, index=False)
    with pytest.raises(DatasetError, match="declared column\\(s\\) 'smoker' missing from the file"):
        registry.load_local("visits")


# ------------------------------------------------------------------------------------------ control variates


def test_control_store_keeps_before_and_after_of_the_last_round(tmp_path) -> None:
    from consortium.fl.core import FLError
    from consortium.node.store import ControlKey, ControlStore

    store = ControlStore(tmp_path)
    key = ControlKey(project_id=3, spec_hash="ab" * 32, run_id=7, dataset="digits")
    assert store.load(key, 1) is None, "a node without a record starts from c_i = 0"
    before, after = {"w": torch.zeros(2, 2)}, {"w": torch.full((2, 2), 0.5)}
    path = store.save(key, 4, before, after)
    assert path == tmp_path / "controls" / f"project-3-{'ab' * 8}" / "run-7" / "digits.safetensors"
    assert torch.equal(store.load(key, 5)["w"], after["w"]), "the next round starts from c_i after round 4"
    assert torch.equal(store.load(key, 9)["w"], after["w"])
    assert torch.equal(store.load(key, 4)["w"], before["w"]), "a replayed round 4 starts where it first did"
    with pytest.raises(FLError, match="after round 4, later than the task's round 3"):
        store.load(key, 3)
    other_run = ControlKey(project_id=3, spec_hash="ab" * 32, run_id=8, dataset="digits")
    assert store.load(other_run, 5) is None
    assert [p.name for p in path.parent.iterdir()] == ["digits.safetensors"], "no temp file is left behind"


def test_control_store_rejects_bad_keys_and_files(tmp_path) -> None:
    from consortium.fl.core import FLError
    from consortium.node.store import ControlKey, ControlStore

    store = ControlStore(tmp_path)
    with pytest.raises(FLError, match="bad control-variate key"):
        store.path(ControlKey(1, "ab" * 32, 1, "../etc"))
    key = ControlKey(1, "ab" * 32, 1, "digits")
    store.path(key).parent.mkdir(parents=True)
    store.path(key).write_bytes(b"not safetensors")
    with pytest.raises(FLError, match="not a readable control-variate file"):
        store.load(key, 2)
