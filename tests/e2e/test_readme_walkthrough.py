"""README.md's "Your own consortium with CSV files", executed: the ```bash blocks between
``<!-- walkthrough:start -->`` and ``<!-- walkthrough:end -->`` are split into commands (a command ends where
bash's parser says it is complete, so loops, continuations and here-documents stay whole) and run one by one,
as a user would type them, in one bash process in an empty directory: variables carry over, ``&`` commands
(hub, nodes) run in the background and are killed with that shell's process group at the end. The only
substitution is the port (8700 -> a free one); ``consortium`` is this checkout's CLI.

Then: the run's test accuracy (from the downloaded card) is within 2 points of centralised logistic regression
on the standardised data (same split, computed here), ``sim run`` of the same spec within 1 point of it, and
``model predict`` on the held-out rows reproduces the hub's test accuracy."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from consortium.launch import free_port
from consortium.sim.datasets import load_dataset

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- walkthrough:start -->", "<!-- walkthrough:end -->"
DONE = "__WALKTHROUGH_DONE__"
COMMAND_TIMEOUT_S = 600.0


def walkthrough_commands(readme: str) -> list[str]:
    """The walk-through's commands in order: each complete bash command (comments and blank lines dropped)."""
    assert readme.count(START) == 1 and readme.count(END) == 1, "README.md needs one walk-through section"
    section = readme.split(START, 1)[1].split(END, 1)[0]
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        pending: list[str] = []
        heredoc: str | None = None
        for line in block.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending.append(line)
            if heredoc is None and (opened := re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)):
                heredoc = opened.group(1)
                continue
            if heredoc is not None:
                if line.strip() != heredoc:
                    continue
                heredoc = None
            text = "\n".join(pending)
            if not line.endswith("\\") and _complete(text):
                commands.append(text)
                pending = []
        assert not pending, f"an unfinished command in the walk-through: {pending}"
    return commands


def _complete(text: str) -> bool:
    """Whether bash parses ``text`` as whole commands (an open loop or here-document is not)."""
    return subprocess.run(["bash", "-n"], input=text + "\n", capture_output=True, text=True).returncode == 0


class Shell:
    """One bash process fed a command at a time; each command's output and exit status come back."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, command: str, timeout: float) -> tuple[int, str]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{command}\necho \"{DONE} $?\"\n")
        self.proc.stdin.flush()
        output: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return 124, "".join(output) + f"\n(no end after {timeout:.0f} s)"
            if line is None:
                return 255, "".join(output) + "\n(the shell exited)"
            if line.startswith(DONE):
                return int(line.split()[1]), "".join(output)
            output.append(line)

    def close(self) -> None:
        """End the shell and everything it started in the background (its process group)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(10)
                time.sleep(0.5 if sig == signal.SIGTERM else 0)
            except subprocess.TimeoutExpired:
                continue


def _environment(bin_dir: Path) -> dict[str, str]:
    """This checkout's ``consortium`` first on PATH; nothing of the caller's hub settings."""
    bin_dir.mkdir()
    wrapper = bin_dir / "consortium"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m consortium "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSORTIUM_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env |= {"CONSORTIUM_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}
    return env


def _logs(workdir: Path) -> str:
    parts = []
    for path in [workdir / "hub.log", *sorted(workdir.glob("orgs/*/node.log"))]:
        if path.is_file():
            tail = "\n".join(path.read_text(errors="replace").splitlines()[-25:])
            parts.append(f"--- {path.relative_to(workdir)} ---\n{tail}")
    return "\n".join(parts)


def _centralised_standardised() -> float:
    data = load_dataset("breast_cancer", raw=True)
    scaler = StandardScaler().fit(data.train.x.double().numpy())
    model = LogisticRegression(max_iter=5000).fit(scaler.transform(data.train.x.double().numpy()),
                                                  data.train.y.numpy())
    return float(model.score(scaler.transform(data.test.x.double().numpy()), data.test.y.numpy()))


def test_walkthrough_commands_split_as_a_user_types_them():
    commands = walkthrough_commands((ROOT / "README.md").read_text())
    assert any(c.startswith("cat > spec.json <<") and c.rstrip().endswith("SPEC") for c in commands)
    assert any(c.startswith("for org in $ORGS; do\n") and c.endswith("done") for c in commands)
    assert sum(c.rstrip().endswith("&") or "& done" in c for c in commands) == 2


@pytest.mark.timeout(2400)  # about 90 s on an idle two-core machine; far more when it is shared
def test_readme_walkthrough_runs_and_matches_centralised_training_and_the_simulator(tmp_path):
    if shutil.which("curl") is None:
        pytest.fail("the README walk-through waits for the hub with curl, which is not installed")
    port = free_port()
    commands = [c.replace("8700", str(port)) for c in walkthrough_commands((ROOT / "README.md").read_text())]
    workdir = tmp_path / "work"
    workdir.mkdir()
    shell = Shell(workdir, _environment(tmp_path / "bin"))
    transcript: list[str] = []
    started = time.monotonic()
    try:
        for command in commands:
            rc, output = shell.run(command, COMMAND_TIMEOUT_S)
            transcript.append(f"$ {command}\n{output}")
            assert rc == 0, f"README command failed ({rc}):\n$ {command}\n{output}\n{_logs(workdir)}"
    finally:
        shell.close()
    elapsed = time.monotonic() - started
    text = "\n".join(transcript)
    print(text[-3000:])

    assert f"hub serving http://127.0.0.1:{port}" in text
    card = json.loads((workdir / "model" / "model_card.json").read_text())
    real = card["final_metrics"]["test"]["accuracy"]
    simulated = json.loads((workdir / "sim.json").read_text())["final_metrics"]["accuracy"]
    central = _centralised_standardised()
    print(f"walk-through {elapsed:.0f} s: accuracy real {real:.4f}, sim {simulated:.4f}, "
          f"centralised standardised {central:.4f}")
    assert abs(real - central) <= 0.02, (real, central)
    assert abs(real - simulated) <= 0.01, (real, simulated)
    assert card["preprocessing"]["spec"]["scale"] == "standardise" and card["warnings"] == []

    predictions = pd.read_csv(workdir / "predictions.csv")
    truth = pd.read_csv(workdir / "data" / "test.csv")["diagnosis"]
    assert list(predictions.columns) == ["prediction", "probability_0", "probability_1"]
    assert float((predictions["prediction"] == truth).mean()) == pytest.approx(real)
    assert sorted(p.name for p in (workdir / "model").iterdir()) == sorted(
        p.name for p in (workdir / "sim-model").iterdir())
