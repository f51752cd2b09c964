"""A node killed in each phase (statistics, fit, evaluate): the phase closes at its round timeout with
min_nodes met, the drop is a ``task.dropped`` ledger entry, and the node, restarted at once, rejoins a later
round of the same run (the evaluate phase is the run's last)."""

from __future__ import annotations

import pytest

from consortium.bench.fault_scenarios import NODE_PHASES, node_kill

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.mark.parametrize("phase", list(NODE_PHASES))
def test_a_node_killed_in_a_phase_is_dropped_and_rejoins(lab, phase: str) -> None:
    result = node_kill(lab, phase)
    assert result["ok"], f"{result}\n{lab.logs()}"
    if phase == "fit":
        assert result["dropped_in_rounds"][:1] == [2]
    if phase != "evaluate":
        assert result["rejoined_round"] is not None
