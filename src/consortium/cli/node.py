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
) -> None:
    """Run an organisation's node: long-poll the hub and train locally on approved tasks."""
    import logging

    import torch

    from consortium.config import torch_threads
    from consortium.node.agent import NodeAgent
    from consortium.node.environments import EnvironmentRegistry
    from consortium.node.policy import NodePolicy, VoteBook
    from consortium.node.registry import LocalRegistry

    torch.set_num_threads(torch_threads())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if enrol_token:
        enrol(hub, org_dir, enrol_token, "node")
    client = org_client(hub, org_dir)
    registry = LocalRegistry(org_dir)
    policy = NodePolicy(org=client.identity.org, votes=VoteBook(org_dir),
                        local_datasets={entry.name for entry in registry.all()},
                        local_environments={entry.name for entry in EnvironmentRegistry(org_dir).all()})
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    agent = NodeAgent(client, registry, policy, poll_wait=poll_wait,
                      on_task=lambda t, outcome: logging.info("task %s (%s, run %s, round %s): %s",
                                                              t.id, t.kind.value, t.run_id, t.round, outcome))
    logging.info("node of %s polling %s", client.identity.org, hub)
    try:
        agent.run_forever(threading.Event())
    except KeyboardInterrupt:
        logging.info("node of %s stopped", client.identity.org)
