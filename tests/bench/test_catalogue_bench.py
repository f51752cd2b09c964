"""`consortium bench catalogue` on a tiny seeded hub: the searches answer through a real hub process, find
results, and the report has the latency line and the target."""

from __future__ import annotations

import random

from consortium.bench import catalogue_search
from consortium.bench.report import machine_info


def test_a_tiny_catalogue_bench_times_searches_through_a_hub_process() -> None:
    result = catalogue_search.run_catalogue_bench(versions=300, requests=24, repeats=1, seed=3)
    sqlite = result["backends"]["sqlite"]
    assert (sqlite["versions"], sqlite["datasets"]) == (300, 150) and 0 < sqlite["open_datasets"] <= 150
    assert sqlite["runs"][0]["results"] > 0 and 0 < sqlite["p50_ms"] <= sqlite["p95_ms"] <= sqlite["max_ms"]
    body = catalogue_search.report_markdown(result, machine_info(), catalogue_search.software(None))
    assert "| sqlite |" in body and "≤ 50 ms" in body and "300 open data versions" in body


def test_the_search_mix_is_seeded_and_uses_every_filter() -> None:
    mix = catalogue_search.queries(random.Random(5), 400)
    assert mix == catalogue_search.queries(random.Random(5), 400)
    used = {key for _, params in mix for key in params}
    assert used == {"q", "license", "task", "owner", "open", "min_rows", "max_rows", "min_bytes", "sort",
                    "offset"}
    assert any(anonymous for anonymous, _ in mix) and not all(anonymous for anonymous, _ in mix)
