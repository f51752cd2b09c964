"""`consortium bench web` on a tiny seeded hub: every page answers, the seeded ledger verifies, and the
report has a line per page with the target."""

from __future__ import annotations

from consortium.bench import web
from consortium.bench.report import machine_info


def test_a_tiny_web_bench_times_every_page_of_a_verified_hub() -> None:
    result = web.run_web_bench(web.Sizes(datasets=30, projects=6, entries=400), requests=2, repeats=1)
    assert result["entries"] == 400
    assert set(result["pages"]) == {"overview", "catalogue", "dataset card", "projects", "project", "run",
                                    "models", "members"}
    assert all(0 < p["p50_ms"] <= p["p95_ms"] for p in result["pages"].values())
    body = web.report_markdown(result, machine_info())
    assert body.count("| ≤ 200 ms |") == len(result["pages"]) and "400 ledger entries" in body
