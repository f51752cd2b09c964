"""``consortium node``: run an organisation's node."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from consortium.cli.common import HubOpt, OrgDirOpt, org_client
from consortium.cli.org import enrol


def node(
    hub: HubOpt,
    org_dir: OrgDirOpt,
    enrol_token: Annotated[str | None, typer.Option("--enrol-token", help="one-time token to enrol first")] = None,
    poll_wait: Annotated[float, typer.Option("--poll-wait", help="long-poll seconds")] = 25.0,
    witness_every: Annotated[float, typer.Option(
        "--witness-every", min=0.05,
        help="seconds between checks and cosignatures of the hub's ledger checkpoint (kept in "
             "ORG_DIR/checkpoints.jsonl)")] = 10.0,
) -> None:
    """Run an organisation's node: long-poll the hub and train locally on approved tasks."""
    import logging

    import torch

    from consortium.config import torch_threads
    from consortium.node.agent import NodeAgent
    from consortium.node.environments import EnvironmentRegistry
    from consortium.node.policy import ApprovalBook, NodePolicy
    from consortium.node.registry import LocalRegistry
    from consortium.node.witness import start_witness

    torch.set_num_threads(torch_threads())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if enrol_token:
        enrol(hub, org_dir, enrol_token, "node")
    client = org_client(hub, org_dir)
    registry = LocalRegistry(org_dir)
    policy = NodePolicy(org=client.identity.org, approvals=ApprovalBook(org_dir),
                        local_datasets={entry.name for entry in registry.all()},
                        local_environments={entry.name for entry in EnvironmentRegistry(org_dir).all()})
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    agent = NodeAgent(client, registry, policy, poll_wait=poll_wait,
                      on_task=lambda t, outcome: logging.info("task %s (%s, run %s, round %s): %s",
                                                              t.id, t.kind.value, t.run_id, t.round, outcome))
    logging.info("node of %s polling %s", client.identity.org, hub)
    stop = threading.Event()
    start_witness(org_client(hub, org_dir), org_dir, stop, witness_every)
    try:
        agent.run_forever(stop)
    except KeyboardInterrupt:
        stop.set()
        logging.info("node of %s stopped", client.identity.org)
