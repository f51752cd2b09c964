"""A real Chromium driven by Playwright: Debian's ``/usr/bin/chromium`` or the one ``CONSORTIUM_CHROMIUM``
names (Playwright's own browser download cannot reach the network here). Without one the browser tests skip,
saying so, except under ``CI=true``, where a missing Chromium fails them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def find_chromium() -> str | None:
    """The Chromium to drive: ``CONSORTIUM_CHROMIUM`` when set, else Debian's, else one on the PATH."""
    named = os.environ.get("CONSORTIUM_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    for candidate in CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium")


def _missing(why: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"browser tests must run in CI: {why}")
    pytest.skip(f"browser tests skipped: {why}")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium for the tests of one module (Playwright's sync API holds an event loop while it
    runs, so it must be gone before other modules' tests call asyncio.run)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    executable = find_chromium()
    if executable is None:
        _missing("no Chromium found (install Debian's chromium, or set CONSORTIUM_CHROMIUM to one)")
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=executable, headless=True,
                                           args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield found
        finally:
            found.close()
