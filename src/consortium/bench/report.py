"""Shared pieces of the benchmark suites: machine description and BENCHMARKS.md sections."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from pathlib import Path
from typing import Any


def machine_info() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": f"Python {platform.python_version()}",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": dt.date.today().isoformat(),
    }


def update_benchmarks_md(path: Path, suite: str, body: str, command: str | None = None) -> None:
    """Replace (or append) the section of ``suite`` between its markers, keeping the other suites; the heading
    names ``command`` (default ``consortium bench SUITE``)."""
    begin, end = f"<!-- bench:{suite}:begin -->", f"<!-- bench:{suite}:end -->"
    section = f"{begin}\n## `{command or f'consortium bench {suite}'}`\n\n{body}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEvery figure here was measured by the command shown with it.\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _m: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)
