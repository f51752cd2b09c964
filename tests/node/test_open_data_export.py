"""The canonical CSV a node publishes holds exactly its card's table: read back, it hashes to the card's
canonical SHA-256 (mixed dtypes, a missing float, quoted strings); shaped columns are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from consortium.node.open_data import write_canonical_csv
from consortium.tables import DatasetError, load_table


def test_the_canonical_csv_reads_back_to_the_same_table(tmp_path: Path) -> None:
    source = tmp_path / "people.parquet"
    pd.DataFrame({
        "age": np.array([34, 71, 18], dtype=np.int64),
        "weight": [70.25, float("nan"), 1e-7],
        "smoker": [True, False, True],
        "postcode": ['AB1 "2', "CD3, 4", "EF5\n6"],
        "diagnosis": ["flu", "none", "asthma"],
    }).to_parquet(source)
    loaded = load_table(source, "diagnosis")
    out = tmp_path / "people.csv"
    digest = write_canonical_csv(loaded, out)
    again = load_table(out, "diagnosis", declared=loaded.schema)
    assert again.sha256 == loaded.sha256 and again.rows == 3
    assert len(digest) == 64 and out.read_text().splitlines()[0] == "age,weight,smoker,postcode,diagnosis"


def test_shaped_columns_are_not_written_as_csv(tmp_path: Path) -> None:
    source = tmp_path / "images.npz"
    np.savez(source, x=np.zeros((2, 2, 2), dtype=np.float32), y=np.array([0, 1], dtype=np.int64))
    with pytest.raises(DatasetError, match="shape"):
        write_canonical_csv(load_table(source, "y"), tmp_path / "images.csv")
    assert list(tmp_path.glob("images.csv*")) == []
