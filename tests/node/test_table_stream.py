"""A table read in many small batches hashes to what ``load_table`` hashes whole (CSV and Parquet, mixed
dtypes, missing floats, quoted strings), its canonical CSV is the in-memory writer's, and a file changed since
its card is refused with no CSV left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from consortium.node import open_data, table_stream
from consortium.node.actions import prepare_dataset
from consortium.node.registry import LocalRegistry
from consortium.tables import DatasetError, load_table


def people(rows: int = 5000) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    weight = rng.normal(70, 15, rows)
    weight[rng.random(rows) < 0.05] = np.nan
    return pd.DataFrame({
        "age": rng.integers(0, 100, rows), "weight": weight * 10.0 ** rng.integers(-6, 18, rows),
        "smoker": rng.random(rows) < 0.3,
        "town": rng.choice(["Aberdeen", 'Dun "Deagh"', "Perth, WA", "Ayr\nnorth"], rows),
        "label": rng.integers(0, 3, rows)})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_batches_hash_like_the_whole_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    monkeypatch.setattr(table_stream, "BATCH_BYTES", 4096)  # dozens of batches
    source = tmp_path / f"people{suffix}"
    frame = people()
    frame.to_csv(source, index=False) if suffix == ".csv" else frame.to_parquet(source)
    loaded = load_table(source, "label", categorical=["town"])
    done = table_stream.export_csv(source, loaded.schema, loaded.rows, tmp_path / "out.csv", keep=["age"])
    assert (done.table_sha256, done.rows) == (loaded.sha256, loaded.rows)
    assert np.array_equal(done.kept["age"], loaded.columns["age"])
    whole = tmp_path / "whole.csv"
    assert open_data.write_canonical_csv(loaded, whole) == done.sha256
    assert whole.read_bytes() == done.path.read_bytes() and done.size == whole.stat().st_size
    assert load_table(done.path, "label", declared=loaded.schema).sha256 == loaded.sha256
    assert list(tmp_path.glob("*.tmp")) == [] and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [source.name, "out.csv", "whole.csv"])  # no spill file left


def test_a_file_changed_since_its_card_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    people(200).to_csv(source, index=False)
    loaded, card = prepare_dataset(source, "people", "CC0-1.0", "label", categorical=["town"], allow_missing=True)
    org_dir = tmp_path / "org"
    LocalRegistry(org_dir).add("people", loaded.path, "label", card)
    assert open_data.export_registered(org_dir, "people", tmp_path / "work").table_sha256 == card.sha256
    source.write_text(source.read_text().replace("Aberdeen", "Inverness", 1))
    with pytest.raises(DatasetError, match="no longer matches its card"):
        open_data.export_registered(org_dir, "people", tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []
    source.write_text("age,label\n1,2\n")
    with pytest.raises(DatasetError, match="not the card's"):
        open_data.export_registered(org_dir, "people", tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []
