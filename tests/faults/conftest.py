"""The fault harness's lab for these tests: a real hub process on SQLite, the digits consortium and three real
node processes, shared by the tests of this directory (each leaves it with its hub and nodes running)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consortium.bench.faultlab import Lab


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab.open(tmp_path_factory.mktemp("faults"))
    try:
        lab.start_nodes()
        yield lab
    finally:
        lab.close()
