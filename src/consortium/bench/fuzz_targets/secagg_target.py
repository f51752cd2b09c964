"""The SecAgg target: the messages of a secure aggregation round, as the hub and the node receive them.

A round of three clients ("1", "2", "3", threshold 2, four-word vectors) is played honestly up to one
stage, with seeded randomness; then client 3's message, or a server message client 3 reads, is the fuzzed
input. The first byte picks where (mod 8); the rest is the message's bytes:

- 0-3: client 3's message of stage ``advertise_keys``, ``share_keys``, ``masked_input`` (JSON or the binary
  frame) or ``unmask``, received by the hub's :class:`~consortium.hub.secagg.SecAggRound` after the other two
  clients' messages; the stage is then closed (and at ``unmask`` the sum computed);
- 4-6: the key directory, share inbox or unmask request that client 3 reads (the node parses it with
  ``model_validate_json`` and hands it to :class:`~consortium.fl.privacy.secagg.client.SecAggClient`);
- 7: the round setup a node reads first (:class:`~consortium.fl.privacy.secagg.setup.RoundSetup`).

Refusals: :class:`~consortium.fl.privacy.secagg.errors.SecAggError` (a refused message, or an abort when
fewer than the threshold remain), pydantic's ``ValidationError`` for a server message the node cannot read.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from consortium.bench.fuzz_targets import Target
from consortium.fl.privacy.secagg.client import SecAggClient
from consortium.fl.privacy.secagg.errors import SecAggError
from consortium.fl.privacy.secagg.messages import KeyDirectory, SecAggConfig, ShareInbox, UnmaskRequest, to_wire
from consortium.fl.privacy.secagg.server import STAGES, SecAggServer
from consortium.fl.privacy.secagg.setup import RoundSetup
from consortium.hub.secagg import SecAggRound

CLIENTS = ("1", "2", "3")
FUZZED = "3"
CONFIG = SecAggConfig(round=7, clients=list(CLIENTS), threshold=2, vector_length=4)
SETUP = RoundSetup(config=CONFIG, clip_range=1.0, bits=16)
INPUTS = {c: np.arange(4, dtype=np.uint32) * (i + 1) for i, c in enumerate(CLIENTS)}


def _random(client: str) -> Callable[[int], bytes]:
    counter = itertools.count()
    return lambda n: hashlib.shake_256(f"fuzz:{client}:{next(counter)}".encode()).digest(n)


def _client(client: str) -> SecAggClient:
    return SecAggClient(CONFIG, client, _random(client))


@dataclass(frozen=True)
class Transcript:
    """An honest round: each stage's client messages and what the server published after it."""

    sent: list[dict[str, Any]]
    directory: KeyDirectory
    inboxes: dict[str, ShareInbox]
    request: UnmaskRequest


@functools.cache
def transcript() -> Transcript:
    server = SecAggServer(CONFIG)
    clients = {c: _client(c) for c in CLIENTS}
    sent: list[dict[str, Any]] = [{c: clients[c].advertise() for c in CLIENTS}]
    for message in sent[0].values():
        server.receive(message)
    directory = server.close_advertise()
    sent.append({c: clients[c].share_keys(directory) for c in CLIENTS})
    for message in sent[1].values():
        server.receive(message)
    inboxes = server.close_share_keys()
    sent.append({c: clients[c].masked_input(inboxes[c], INPUTS[c]) for c in CLIENTS})
    for message in sent[2].values():
        server.receive(message)
    request = server.close_masked_input()
    sent.append({c: clients[c].unmask(request) for c in CLIENTS})
    return Transcript(sent, directory, inboxes, request)


_CLOSE = {"advertise_keys": SecAggServer.close_advertise, "share_keys": SecAggServer.close_share_keys,
          "masked_input": SecAggServer.close_masked_input, "unmask": SecAggServer.close_unmask}


def _server_stage(stage_index: int, body: bytes) -> None:
    honest = transcript()
    round_ = SecAggRound(CONFIG.round, {int(c): 1 for c in CLIENTS}, lambda _key: None)
    round_.start(SETUP)
    server = round_.server
    assert server is not None
    for index, stage in enumerate(STAGES[: stage_index + 1]):
        for client in CLIENTS:
            if index < stage_index or client != FUZZED:
                server.receive(honest.sent[index][client])
        if index == stage_index:
            try:
                round_.receive(int(FUZZED), stage, body)
            except SecAggError:
                pass
        result = _CLOSE[stage](server)
        if stage == "unmask" and set(server.revealed) == set(CLIENTS):
            assert result.dtype == np.uint32 and result.shape == (CONFIG.vector_length,)


def _client_stage(stage_index: int, body: bytes) -> None:
    honest = transcript()
    client = _client(FUZZED)
    client.advertise()
    model = (KeyDirectory, ShareInbox, UnmaskRequest)[stage_index]
    message = model.model_validate_json(body)
    if stage_index == 0:
        client.share_keys(message)
        return
    client.share_keys(honest.directory)
    if stage_index == 1:
        client.masked_input(message, INPUTS[FUZZED])
        return
    client.masked_input(honest.inboxes[FUZZED], INPUTS[FUZZED])
    client.unmask(message)


def _setup(body: bytes) -> None:
    setup = RoundSetup.model_validate_json(body)
    quantiser = setup.quantiser()
    if FUZZED in setup.config.clients:
        SecAggClient(setup.config, FUZZED, _random(FUZZED)).advertise()
    quantiser.quantise(torch.linspace(-2, 2, 5))


def check(data: bytes) -> None:
    if not data:
        return
    where, body = data[0] % 8, data[1:]
    try:
        if where < 4:
            _server_stage(where, body)
        elif where < 7:
            _client_stage(where - 4, body)
        else:
            _setup(body)
    except (SecAggError, ValidationError):
        pass


def _bytes(message: Any) -> bytes:
    wire = to_wire(message) if not isinstance(message, RoundSetup | KeyDirectory | ShareInbox | UnmaskRequest) \
        else message.model_dump_json()
    return wire.encode() if isinstance(wire, str) else wire


def seeds() -> dict[str, bytes]:
    honest = transcript()
    found = {f"server-{stage}": bytes([i]) + _bytes(honest.sent[i][FUZZED]) for i, stage in enumerate(STAGES)}
    found["server-masked-input-json"] = b"\x02" + honest.sent[2][FUZZED].model_dump_json().encode()
    found["client-directory"] = b"\x04" + _bytes(honest.directory)
    found["client-inbox"] = b"\x05" + _bytes(honest.inboxes[FUZZED])
    found["client-unmask-request"] = b"\x06" + _bytes(honest.request)
    found["setup"] = b"\x07" + _bytes(SETUP)
    return found


TARGETS = {"secagg": Target("secagg", __doc__ or "", check, seeds)}
