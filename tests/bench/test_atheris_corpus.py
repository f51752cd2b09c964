"""The atheris corpus replayed without atheris: every target over every file of ``tests/fuzz_corpus/<target>/``
(seeds and the reproducers of fixed findings) returns or refuses with its documented errors; and a few
seconds of real fuzzing when atheris is installed (the bench's small sample)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from consortium.bench import atheris_bench
from consortium.bench.fuzz_targets import TARGET_NAMES, load

CORPUS = Path(__file__).resolve().parents[1] / "fuzz_corpus"
CASES = [(name, path) for name in TARGET_NAMES for path in sorted((CORPUS / name).iterdir())]


def test_every_target_has_a_corpus() -> None:
    for name in TARGET_NAMES:
        assert any((CORPUS / name).iterdir()), f"tests/fuzz_corpus/{name} is empty"


@pytest.mark.parametrize(("name", "path"), CASES, ids=[f"{n}/{p.name}" for n, p in CASES])
def test_corpus_file_is_parsed_or_refused(name: str, path: Path) -> None:
    load(name).check(path.read_bytes())


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_seeds_are_in_the_corpus(name: str) -> None:
    """The committed seeds are what ``bench atheris --write-seeds`` writes (regenerate after changing one)."""
    for seed, data in load(name).seeds().items():
        path = CORPUS / name / f"seed-{seed}"
        assert path.exists() and path.read_bytes() == data, f"{path} is missing or stale"


def test_parse_log_reads_libfuzzer_figures() -> None:
    run = atheris_bench.TargetRun("x", 1.0)
    atheris_bench.parse_log(
        "#2\tINITED cov: 10 ft: 12 corp: 3/40b exec/s: 0 rss: 300Mb\n"
        "#900\tDONE   cov: 37 ft: 68 corp: 14/84b lim: 4096 exec/s: 62352 rss: 375Mb\n"
        "Test unit written to /tmp/w/crash-abc\nDone 997640 runs in 16 second(s)\n"
        "stat::number_of_executed_units: 997640\n"
        "stat::peak_rss_mb:              375\n", run)
    assert (run.execs, run.edges, run.features, run.corpus, run.peak_rss_mb) == (997640, 37, 68, 14, 375)
    assert run.fuzz_seconds == 16
    assert run.findings == ["/tmp/w/crash-abc"] and run.status == "crash"


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_a_short_fuzzing_run_finds_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    atheris_bench.write_seeds(corpus, ["signature"])  # the target that imports least: a quick start
    run = atheris_bench.run_target("signature", 3, corpus, tmp_path / "work", keep_findings=False)
    assert run.status == "no finding", (tmp_path / "work" / "signature" / "libfuzzer.log").read_text()[-3000:]
    assert run.execs > 100 and run.edges > 10


def test_the_cli_writes_the_seeds_and_refuses_an_unknown_target(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from consortium.cli import app

    written = CliRunner().invoke(app, ["bench", "atheris", "--write-seeds", "--target", "signature",
                                       "--corpus", str(tmp_path)])
    assert written.exit_code == 0, written.output
    assert sorted(p.name for p in (tmp_path / "signature").iterdir()) == sorted(
        p.name for p in (CORPUS / "signature").iterdir() if p.name.startswith("seed-"))
    refused = CliRunner().invoke(app, ["bench", "atheris", "--target", "nope", "--corpus", str(tmp_path)])
    assert refused.exit_code == 2 and "unknown target(s) nope" in " ".join(refused.output.split())


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_merging_keeps_only_inputs_with_new_coverage(tmp_path: Path) -> None:
    corpus, found = tmp_path / "corpus", tmp_path / "work" / "signature" / "corpus"
    atheris_bench.write_seeds(corpus, ["signature"])
    found.mkdir(parents=True)
    (found / "again").write_bytes((corpus / "signature" / "seed-signed-get").read_bytes())
    (found / "new").write_bytes(b"GET /\r\nX-Consortium-Key: k\r\nX-Consortium-Timestamp: 12x\r\n"
                                b"X-Consortium-Nonce: n\r\nX-Consortium-Signature: s\r\n\r\n")
    assert atheris_bench.merge_corpus("signature", corpus, [found], tmp_path / "merge") == 1
