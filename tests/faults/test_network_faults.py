"""The nodes reach the hub through a proxy that cuts and delays connections: they retry, and the run ends
with the params of an uninterrupted run of the same seed."""

from __future__ import annotations

import pytest

from consortium.bench.fault_scenarios import proxy_run
from consortium.bench.faults import reference_run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_a_run_through_a_cutting_and_delaying_proxy_ends_with_the_same_params(lab) -> None:
    reference = reference_run(lab, 4, seed=5, name="faults-proxy-reference")[0]
    result = proxy_run(lab, 4, reference, seed=1, spec_seed=5)
    assert result["ok"], f"{result}\n{lab.logs()}"
    assert result["cut"] >= 1 and result["delayed"] >= 1, result
