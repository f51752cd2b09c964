"""``consortium node``: run an organisation's node."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from consortium.cli.common import CaFileOpt, fail, org_client
from consortium.cli.org import enrol


def node(
    hub: Annotated[str | None, typer.Option("--hub", help="hub base URL (else CONSORTIUM_HUB)")] = None,
    org_dir: Annotated[Path | None, typer.Option(
        "--org-dir", help="the org's local directory: keys, datasets (else CONSORTIUM_ORG_DIR)")] = None,
    enrol_token: Annotated[str | None, typer.Option(
        "--enrol-token", help="one-time token to enrol first (else CONSORTIUM_ENROL_TOKEN)")] = None,
    poll_wait: Annotated[float | None, typer.Option(
        "--poll-wait", help="long-poll seconds, 0..60 (else CONSORTIUM_POLL_WAIT, default 25)")] = None,
    witness_every: Annotated[float | None, typer.Option(
        "--witness-every", help="seconds between checks and cosignatures of the hub's ledger checkpoint, kept "
                                "in ORG_DIR/checkpoints.jsonl (else CONSORTIUM_WITNESS_EVERY, default 10)")] = None,
    ca_file: CaFileOpt = None,
) -> None:
    """Run an organisation's node: long-poll the hub and train locally on approved tasks."""
    import logging

    import torch

    from consortium.config import NodeSettings
    from consortium.node.agent import NodeAgent
    from consortium.node.environments import EnvironmentRegistry
    from consortium.node.hub_pin import PinnedHubKey
    from consortium.node.policy import NodePolicy, VoteBook
    from consortium.node.registry import LocalRegistry
    from consortium.node.challenges import start_challenge_host
    from consortium.node.witness import start_witness

    try:
        settings = NodeSettings.from_args(hub, org_dir, poll_wait, enrol_token, witness_every, ca_file)
    except ValueError as exc:
        fail(str(exc))
    torch.set_num_threads(settings.torch_threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if settings.enrol_token:
        enrol(settings.hub_url, settings.org_dir, settings.enrol_token, "node", settings.ca_file)
    client = org_client(settings.hub_url, settings.org_dir, settings.ca_file)
    _refuse_untrusted_hub(client)
    registry = LocalRegistry(settings.org_dir)  # read again whenever the file changes: no restart after an add
    environments = EnvironmentRegistry(settings.org_dir)
    policy = NodePolicy(org=client.identity.org, votes=VoteBook(settings.org_dir),
                        local_datasets=registry, local_environments=environments,
                        hub_key=PinnedHubKey(settings.org_dir, client.health).key)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    agent = NodeAgent(client, registry, policy, environments=environments, poll_wait=settings.poll_wait_s,
                      secagg_halt_before=settings.secagg_halt_before,
                      on_task=lambda t, outcome: logging.info("task %s (%s, run %s, round %s): %s",
                                                              t.id, t.kind.value, t.run_id, t.round, outcome))
    logging.info("node of %s polling %s", client.identity.org, settings.hub_url)
    stop = threading.Event()
    start_witness(org_client(settings.hub_url, settings.org_dir, settings.ca_file), settings.org_dir, stop,
                  settings.witness_every_s)
    start_challenge_host(org_client(settings.hub_url, settings.org_dir, settings.ca_file), settings.org_dir, stop)
    try:
        agent.run_forever(stop)
    except KeyboardInterrupt:
        stop.set()
        logging.info("node of %s stopped", client.identity.org)


def _refuse_untrusted_hub(client) -> None:
    """Stop with a clear error when the hub's TLS certificate is refused (another CA, another host name): no
    retry can fix that. A hub that is down or starting is left to the agent's retries."""
    import httpx

    from consortium.client import HubError
    from consortium.tls import HubTLSError

    try:
        client.health()
    except HubTLSError as exc:
        fail(str(exc))
    except (httpx.HTTPError, HubError):
        pass
