"""One SecAgg round run in memory: every client and the server in one process, with chosen dropouts.

The simulator, the tests and the benchmark use it; a real deployment runs the same client and server objects
with the hub in between. A client in ``dropouts[stage]`` stops before sending its message of that stage.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass

import numpy as np

from consortium.fl.privacy.secagg.client import SecAggClient
from consortium.fl.privacy.secagg.masks import RandomBytes
from consortium.fl.privacy.secagg.messages import SecAggConfig
from consortium.fl.privacy.secagg.server import STAGES, SecAggServer


@dataclass(frozen=True)
class RoundOutcome:
    total: np.ndarray
    """The uint32 sum of the included clients' vectors (modulo 2^32)."""
    included: tuple[str, ...]
    """``U3``: the clients whose masked input arrived."""
    server: SecAggServer


def run_round(
    config: SecAggConfig,
    inputs: Mapping[str, np.ndarray],
    dropouts: Mapping[str, Set[str]] | None = None,
    random_for: Callable[[str], RandomBytes] | None = None,
    server: SecAggServer | None = None,
) -> RoundOutcome:
    """Run the four stages; SecAggAborted when too few clients remain at some stage.

    ``random_for(client_id)`` gives each client its randomness (``os.urandom`` by default); ``server`` may be
    passed in to inspect it after an abort."""
    unknown = set(dropouts or {}) - set(STAGES)
    if unknown:
        raise ValueError(f"dropouts: unknown stages {sorted(unknown)}; the stages are {list(STAGES)}")
    gone: set[str] = set()

    def active(stage: str) -> list[str]:
        gone.update((dropouts or {}).get(stage, set()))
        return [c for c in config.clients if c not in gone]

    server = server or SecAggServer(config)
    clients = {c: SecAggClient(config, c, random_for(c) if random_for else os.urandom) for c in config.clients}
    for c in active("advertise_keys"):
        server.receive(clients[c].advertise())
    directory = server.close_advertise()
    for c in active("share_keys"):
        server.receive(clients[c].share_keys(directory))
    inboxes = server.close_share_keys()
    for c in active("masked_input"):
        server.receive(clients[c].masked_input(inboxes[c], inputs[c]))
    request = server.close_masked_input()
    for c in active("unmask"):
        server.receive(clients[c].unmask(request))
    return RoundOutcome(server.close_unmask(), server.survivors, server)
