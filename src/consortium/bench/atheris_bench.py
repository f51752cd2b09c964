"""`consortium bench atheris`: coverage-guided fuzzing (atheris + libFuzzer) of every parser that takes network
bytes, one target at a time (:mod:`consortium.bench.fuzz_targets`).

Each target runs in its own process for the time given, starting from its corpus kept in the repo
(``tests/fuzz_corpus/<target>/``, which the tests replay) plus the inputs it found so far in a work
directory, with libFuzzer's per-input timeout (a hang) and RSS limit (unbounded memory). A crash, hang or
out-of-memory input stops that target; its reproducer is copied into the target's corpus directory, so the
tests fail on it until the parser is fixed. Executions, coverage (libFuzzer's ``cov`` edges and ``ft``
features of the instrumented ``consortium`` code) and findings go to BENCHMARKS.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from consortium.bench.fuzz_targets import TARGET_NAMES, load

GRACE_S = 120
"""Beyond the fuzzing time: startup (imports, instrumentation) and the corpus's first pass."""
_PROGRESS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second")
_FINDINGS = {"crash": "crash", "timeout": "hang", "oom": "out of memory", "leak": "leak", "slow-unit": "slow"}


@dataclass
class TargetRun:
    target: str
    seconds: float
    """Wall time of the process: imports and instrumentation, the corpus's first pass, the fuzzing."""
    fuzz_seconds: int = 0
    """The fuzzing itself, as libFuzzer counts it."""
    execs: int = 0
    edges: int = 0
    features: int = 0
    corpus: int = 0
    peak_rss_mb: int = 0
    seeds: int = 0
    findings: list[str] = field(default_factory=list)
    """Reproducers (paths) of crashes, hangs and out-of-memory inputs."""
    returncode: int | None = None
    error: str = ""

    @property
    def status(self) -> str:
        if self.findings:
            kinds = sorted({_FINDINGS.get(Path(p).name.split("-")[0], "crash") for p in self.findings})
            return ", ".join(kinds)
        if self.error:
            return f"error: {self.error}"
        return "no finding"


def write_seeds(corpus_root: Path, targets: Iterable[str] = TARGET_NAMES) -> int:
    """(Re)write each target's seed files ``seed-<name>`` under ``corpus_root/<target>/``; how many."""
    count = 0
    for name in targets:
        folder = corpus_root / name
        folder.mkdir(parents=True, exist_ok=True)
        for seed, data in load(name).seeds().items():
            (folder / f"seed-{seed}").write_bytes(data)
            count += 1
    return count


def parse_log(text: str, run: TargetRun) -> None:
    """Fill ``run``'s figures from libFuzzer's output."""
    for line in text.splitlines():
        if found := _PROGRESS.match(line):
            run.execs, run.edges, run.features, run.corpus = (int(g) for g in found.groups())
        elif found := _STAT.match(line):
            if found.group(1) == "number_of_executed_units":
                run.execs = int(found.group(2))
            elif found.group(1) == "peak_rss_mb":
                run.peak_rss_mb = int(found.group(2))
        elif found := _ARTIFACT.search(line):
            run.findings.append(found.group(1))
        elif found := _DONE.match(line):
            run.fuzz_seconds = int(found.group(2))


def run_target(name: str, seconds: float, corpus_root: Path, work: Path, rss_limit_mb: int = 2048,
               input_timeout_s: int = 10, keep_findings: bool = True) -> TargetRun:
    """Fuzz ``name`` for ``seconds`` in a subprocess; its figures and findings."""
    seeds = corpus_root / name
    seeds.mkdir(parents=True, exist_ok=True)
    live, artifacts = work / name / "corpus", work / name / "findings"
    live.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    run = TargetRun(name, seconds, seeds=sum(1 for p in seeds.iterdir() if p.is_file()))
    command = [sys.executable, "-m", "consortium.bench.fuzz_targets", name, str(live), str(seeds),
               f"-max_total_time={max(1, int(seconds))}", f"-rss_limit_mb={rss_limit_mb}",
               f"-timeout={input_timeout_s}", f"-artifact_prefix={artifacts}/", "-print_final_stats=1"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = work / name / "libfuzzer.log"
    started = time.monotonic()
    with log.open("w") as out:
        try:
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  timeout=seconds + GRACE_S, check=False, start_new_session=True)
            run.returncode = done.returncode
        except subprocess.TimeoutExpired:
            run.error = f"still running {seconds + GRACE_S:.0f} s after it started (killed)"
    run.seconds = time.monotonic() - started
    parse_log(log.read_text(errors="replace"), run)
    if run.returncode not in (0, None) and not run.findings:
        run.error = f"exit status {run.returncode}; see {log}"
    if keep_findings:
        for path in run.findings:
            if Path(path).exists():
                shutil.copy(path, seeds / Path(path).name)
    return run


def run_atheris_bench(minutes: float, targets: Iterable[str], corpus_root: Path, work: Path,
                      rss_limit_mb: int = 2048, input_timeout_s: int = 10,
                      on_done: Callable[[TargetRun], None] | None = None) -> list[TargetRun]:
    """Each of ``targets`` fuzzed for ``minutes``, one after the other."""
    runs = []
    for name in targets:
        run = run_target(name, minutes * 60, corpus_root, work, rss_limit_mb, input_timeout_s)
        runs.append(run)
        if on_done is not None:
            on_done(run)
    return runs


def merge_corpus(name: str, corpus_root: Path, found: Iterable[Path], work: Path) -> int:
    """Add to ``corpus_root/<name>/`` the inputs of the ``found`` directories that reach coverage it does not
    (libFuzzer's ``-merge=1``); how many files were added."""
    seeds = corpus_root / name
    before = sum(1 for _ in seeds.iterdir())
    work.mkdir(parents=True, exist_ok=True)
    wrapper = work / f"fuzz-{name}"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m consortium.bench.fuzz_targets {name} "$@"\n')
    wrapper.chmod(0o755)
    env = os.environ | {"OMP_NUM_THREADS": "1", "CONSORTIUM_FUZZ_SELF": str(wrapper)}
    subprocess.run([str(wrapper), "-merge=1", str(seeds), *(str(d) for d in found if d.is_dir())],
                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=900)
    return sum(1 for _ in seeds.iterdir()) - before


def report_dict(runs: list[TargetRun]) -> dict[str, Any]:
    return {"targets": [asdict(r) | {"status": r.status} for r in runs],
            "findings": sum(len(r.findings) for r in runs)}


def report_markdown(runs: list[TargetRun], command: str, machine: dict[str, Any]) -> str:
    """The BENCHMARKS.md section of a run."""
    from importlib.metadata import version

    lines = [
        f"Command: `{command}`",
        (f"Machine: {machine['cpu']} ({machine['cores']} cores, shared), {machine['python']}, atheris "
         f"{version('atheris')}; measured {machine['date']}. One libFuzzer process per target, one after the "
         "other; each starts from its corpus in `tests/fuzz_corpus/` (replayed by the tests). `cov`: "
         "libFuzzer's coverage edges of the instrumented `consortium` code; `ft`: its features. A fuzzing run "
         "is one long sample, not a median."),
        "",
        "| target | fuzzing s (process s) | executions | exec/s | cov edges | ft | corpus (seeds) | peak RSS MB "
        "| result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        rate = r.execs / r.fuzz_seconds if r.fuzz_seconds else 0
        lines.append(f"| {r.target} | {r.fuzz_seconds} ({r.seconds:.0f}) | {r.execs} | {rate:.0f} | {r.edges} | "
                     f"{r.features} | {r.corpus} ({r.seeds}) | {r.peak_rss_mb} | {r.status} |")
    total = sum(len(r.findings) for r in runs)
    lines += ["", f"Findings: {total}." + ("" if not total else " Reproducers: " + ", ".join(
        f"`{r.target}/{Path(p).name}`" for r in runs for p in r.findings) + ".")]
    return "\n".join(lines)
