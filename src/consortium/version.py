"""The version string written into model cards: package version plus ``git describe`` of a checkout."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from consortium import __version__


@functools.cache
def code_version() -> str:
    """``git describe`` of the source checkout when there is one, else the package version."""
    src = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "describe", "--always", "--dirty", "--tags"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        return f"{__version__}+git.{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return __version__
