"""The node's dataset registry: the cards it builds and its local record of registered files."""

from __future__ import annotations

import json
import os
import threading

import pandas as pd
import pytest
import torch

from consortium.node.registry import LocalRegistry, build_card, parse_schema_option
from consortium.protocol import ColumnSchema, DatasetCardIn
from consortium.tables import DatasetError, load_table


def _numeric(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=["ward"])



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
