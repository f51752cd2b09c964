"""Run drivers under leases (hub replicas), on a SQLite file with the hub clock of ``test_scheduler``: a driver
whose lease another replica took writes nothing more (its next transaction is fenced) and stops, without
failing the run; the new holder replays from the last checkpoint and ends with an uninterrupted run's params;
a replica's keeper leaves a held lease alone and takes an expired one."""

from __future__ import annotations

import asyncio
import threading
import time

from test_scheduler import HANG_GUARD_S, Hub, assert_same, hub_for, spec, uninterrupted  # noqa: F401  (fixtures)

from consortium.hub.drivers import Scheduler
from consortium.hub.routers.runs import Held, deliver_next_task
from consortium.hub.scheduler import RunDriver
from consortium.hub.services import leases
from consortium.hub.services import runs as run_service
from consortium.hub.state import Replication

LEASE_S = 30.0


def leased(hub: Hub, holder: str, lease: leases.Lease | None = None) -> leases.Lease:
    """Make ``hub`` the replica ``holder``, its driver fenced by ``lease`` (taken now if not given)."""
    hub.state.replication = Replication(holder, LEASE_S)
    if lease is None:
        with hub.state.sessions() as session:
            lease = leases.take(session, hub.run_id, holder, LEASE_S, time.time())
    assert lease is not None
    hub.thread = threading.Thread(target=RunDriver(hub.state, hub.run_id, hub.stop, lease), daemon=True)
    return lease


def test_a_driver_whose_lease_was_taken_writes_nothing_and_the_new_holder_finishes_the_run(
    hub_for, uninterrupted
) -> None:
    project = spec()
    stale = hub_for(project)
    leased(stale, "a")
    stale.start()
    stale.answer_round()
    stale.wakeups.until(lambda: stale.run().current_round == 1, "round 1's checkpoint")
    with stale.state.sessions() as session:  # replica a looked dead for a lease's length: b takes over
        taken = leases.take(session, stale.run_id, "b", LEASE_S, time.time() + LEASE_S + 1)
    assert taken is not None and taken.epoch == 2

    stale.answer_round()  # round 2 is complete, but a may not open round 3 nor checkpoint round 2
    stale.thread.join(HANG_GUARD_S)
    assert not stale.thread.is_alive()
    run = stale.run()
    assert (run.status, run.current_round, run.error) == ("running", 1, None)
    assert [r.status for r in stale.rounds(2)] == ["open"] and stale.rounds(3) == []
    assert stale.ledger("run.failed") == [] and stale.ledger("round.abandoned") == []

    resumed = Hub(stale.state.sessions, stale.state.blobs.root, stale.run_id, stale.orgs)
    leased(resumed, "b", taken)
    resumed.start()
    assert_same(resumed.finish(), uninterrupted("plain", project))
    assert [(e["round"], e["attempt"]) for e in resumed.ledger("round.abandoned")] == [(2, 1)]


def test_a_replica_takes_over_an_expired_lease_and_releases_it_when_it_stops(hub_for) -> None:
    hub = hub_for(spec())
    hub.state.replication = Replication("b", 0.3)
    with hub.state.sessions() as session:
        leases.take(session, hub.run_id, "dead", 0.6, time.time())
    scheduler = Scheduler(hub.state)
    assert not scheduler.ensure(hub.run_id), "another replica holds the lease"
    scheduler.resume_all()
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while scheduler.driving() != [hub.run_id]:
            assert time.monotonic() < deadline, "the keeper never took the expired lease"
            time.sleep(0.02)
        assert hub.task("north").round == 1
        with hub.state.sessions() as session:
            holder, epoch, _ = leases.holder(session, hub.run_id)
        assert (holder, epoch) == ("b", 2)
        time.sleep(0.5)  # the keeper renews: the lease outlives its first 0.3 s
        with hub.state.sessions() as session:
            assert leases.holder(session, hub.run_id)[2] > time.time()
    finally:
        scheduler.stop()
    with hub.state.sessions() as session:
        assert leases.holder(session, hub.run_id) == ("b", 2, 0.0), "released: any replica may take it at once"
    assert hub.run().status == "running"


def test_the_driving_replica_does_not_hand_out_again_a_task_answered_through_another_replica(hub_for) -> None:
    """A node answered its task through the other replica, which this driver has not heard of yet: its board
    still holds the task, so a poll asks the database first and the answered task leaves the board."""
    hub = hub_for(spec())
    leased(hub, "a")
    north = hub.orgs["north"]
    hub.start()
    task = hub.task("north")
    with hub.state.sessions() as session:  # replica b's upload handler: durable, this driver not told
        run_service.submit_update(session, hub.state.blobs, hub.state.cache, north, task.id,
                                  hub.honest("north", task), hub.clock.now, durable=lambda *_: True)
    delivered = asyncio.run(deliver_next_task(hub.state, north, 0.0, Held(task.params_sha256)))
    assert delivered is None
    assert hub.state.board.message(task.id) is None, "withdrawn: answered elsewhere"
