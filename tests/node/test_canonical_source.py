"""A registered CSV that already is its table's canonical CSV is found so at registration and published as it
is (the same SHA-256 as the export would write); any other file, or one changed since, is exported."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from consortium.node import open_data, table_stream
from consortium.node.actions import prepare_dataset
from consortium.node.canonical_source import canonical_source
from consortium.node.registry import LocalRegistry
from tests.node.test_table_stream import people


def registered(tmp_path: Path, source: Path):
    loaded, card = prepare_dataset(source, "people", "CC0-1.0", "label", categorical=["town"], allow_missing=True)
    org_dir = tmp_path / "org"
    return org_dir, LocalRegistry(org_dir).add("people", loaded.path, "label", card), card


def test_a_pandas_written_csv_is_canonical_and_published_as_it_is(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_stream, "BATCH_BYTES", 4096)  # dozens of batches
    source = tmp_path / "people.csv"
    people().to_csv(source, index=False)
    org_dir, entry, card = registered(tmp_path, source)
    assert entry.canonical is not None and entry.canonical.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert LocalRegistry(org_dir).get("people").canonical == entry.canonical  # kept in the registry file
    done = open_data.export_registered(org_dir, "people", tmp_path / "work")
    assert (done.written, done.path, done.sha256, done.table_sha256) == (False, source, entry.canonical.sha256,
                                                                         card.sha256)
    exported = table_stream.export_csv(source, card.schema_, card.rows, tmp_path / "out.csv")
    assert (exported.sha256, exported.size) == (done.sha256, done.size)
    done.discard()
    assert source.is_file()  # the registered file is never removed


def test_a_file_in_another_form_is_exported(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    people(300).to_csv(source, index=False, float_format="%.3f")
    org_dir, entry, _ = registered(tmp_path, source)
    assert entry.canonical is None
    done = open_data.export_registered(org_dir, "people", tmp_path / "work")
    assert done.written and done.path.parent == tmp_path / "work"
    done.discard()
    assert not done.path.exists()


def test_a_canonical_file_changed_since_is_exported_and_refused(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    people(300).to_csv(source, index=False)
    org_dir, entry, _ = registered(tmp_path, source)
    assert entry.canonical is not None
    source.write_text(source.read_text().replace("Aberdeen", "Inverness", 1))
    os.utime(source, ns=(entry.canonical.mtime_ns, entry.canonical.mtime_ns + 1))
    with pytest.raises(open_data.DatasetError, match="no longer matches its card"):
        open_data.export_registered(org_dir, "people", tmp_path / "work")


def test_a_card_of_another_table_and_parquet_are_not_canonical(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    people(300).to_csv(source, index=False)
    loaded, card = prepare_dataset(source, "people", "CC0-1.0", "label", categorical=["town"], allow_missing=True)
    assert canonical_source(source, card.schema_, card.rows, card.sha256) is not None
    assert canonical_source(source, card.schema_, card.rows, "0" * 64) is None
    assert canonical_source(source, card.schema_, card.rows + 1, card.sha256) is None
    parquet = tmp_path / "people.parquet"
    people(300).to_parquet(parquet)
    assert canonical_source(parquet, card.schema_, card.rows, card.sha256) is None
    assert loaded.rows == card.rows
