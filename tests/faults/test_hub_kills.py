"""The hub SIGKILLed at named moments of a 3-node run and restarted on the same database and blob store: the
run completes with the params of an uninterrupted run of the same seed, the ledger verifies, no blob is
orphaned or half-written, no round or task is left open (``consortium bench faults`` draws 50 such kills)."""

from __future__ import annotations

import pytest

from consortium.bench.faults import hub_kill_trial

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

FAULTS = [
    "file.written:2",  # the checkpoint's params blob: its temporary file written, not yet renamed
    "upload.committed:4",  # a node's update committed, not yet handed to the driver nor answered
    "phase.open:3",  # the next phase's round and tasks written, its transaction not committed
]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_hub_killed_at_a_named_point_resumes_to_the_uninterrupted_params(lab, fault: str) -> None:
    trial = hub_kill_trial(lab, 100 + FAULTS.index(fault), fault, rounds=4)
    assert trial.fired, f"{fault} was not reached during the run\n{lab.logs()}"
    assert trial.completed and trial.same_params, f"{trial}\n{lab.logs()}"
    assert trial.problems == [], trial.problems
    assert 1 <= trial.abandoned_rounds <= 2
