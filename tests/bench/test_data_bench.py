"""`consortium bench data` on a small seeded table (3 MB): a real hub process, the node's publish (the
registered canonical file as it is, and re-encoded) and an anonymous download through the SDK, the raw httpx peer; every figure is measured and the report names the
targets and the peer ratios."""

from __future__ import annotations

from pathlib import Path

import pytest

from consortium.bench import data_transfer
from consortium.tables import load_table

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_the_generated_table_is_seeded_and_hashed_as_written(tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    rows, digest = data_transfer.generate_table(first, 300_000, seed=4)
    assert data_transfer.generate_table(second, 300_000, seed=4) == (rows, digest)
    assert first.read_bytes() == second.read_bytes() and first.stat().st_size >= 300_000
    assert load_table(first, "label", declared=data_transfer.SCHEMA).sha256 == digest


def test_a_small_data_bench_measures_both_ways_and_the_peer() -> None:
    result = data_transfer.run_data_bench(3.0, repeats=1, seed=1, say=lambda _line: None)
    medians = result["medians"]
    for key in ("publish_mb_s", "reencoded_publish_mb_s", "export_mb_s", "transfer_mb_s", "download_mb_s",
                "peer_put_mb_s", "peer_get_mb_s"):
        assert medians[key] > 0, key
    assert result["register_mb_s"] > 0
    assert result["size_mb"] >= 3.0 and result["rows"] > 0
    assert all(medians[key] >= -50 for key in ("hub_growth_publish_mb", "node_growth_mb"))
    body = data_transfer.report_markdown(result, "consortium bench data --size-gb 0.003 --repeats 1")
    assert "transfer / peer PUT" in body and "download / peer GET" in body and body.count("target ≥ 100") == 3
    assert "sent as it is" in body and "re-encoded" in body
