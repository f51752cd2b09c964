"""The node's side of secure aggregation: after training, the node's privatised delta is quantised and goes
to the hub only masked, through the four SecAgg+ stages of its fit task's round (client ``str(task_id)``).

The node reads what the hub published for each stage (long polls) and sends its message; the client state
machine checks everything the hub relays. The node stops taking part, leaving the round to its survivors,
when the hub says the round ended or left it out (404/409/410), a relayed message is bad, or the round
falls below its threshold."""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from consortium.fl.core import FLError, Params
from consortium.fl.privacy.secagg.client import SecAggClient
from consortium.fl.privacy.secagg.errors import SecAggError
from consortium.fl.privacy.secagg.messages import KeyDirectory, ShareInbox, UnmaskRequest, to_wire
from consortium.fl.privacy.secagg.quantise import flatten
from consortium.fl.privacy.secagg.setup import RoundSetup
from consortium.protocol import TaskOut

log = logging.getLogger("consortium.node.secagg")

M = TypeVar("M", bound=BaseModel)
ENDED = (404, 409, 410)
"""Hub answers after which the node stops taking part in the round."""


class SecAggTransport(Protocol):
    """What the node needs of the hub for secure aggregation (:class:`consortium.client.HubClient`)."""

    def secagg_read(self, task_id: int, stage: str, wait: float) -> bytes | None: ...

    def secagg_post(self, task_id: int, stage: str, body: bytes) -> None: ...


class StoppedTakingPart(Exception):
    """The node left the round (the message says why); the round goes on without it."""


def delta_of(params: Params, tensors: Params) -> Params:
    """The update's delta from the global params (what is summed); FLError if the names differ."""
    if set(tensors) != set(params):
        raise FLError("secure aggregation sums deltas of the global params; the update's tensors "
                      f"{sorted(set(tensors) ^ set(params))} do not match them")
    return {name: tensors[name] - params[name] for name in params}


class SecAggSession:
    """One node's part in one round. ``halt_before``: a stage before whose message the node halts (tests)."""

    def __init__(self, transport: SecAggTransport, task: TaskOut, poll_wait: float,
                 halt_before: str | None = None) -> None:
        self.transport, self.task, self.poll_wait, self.halt_before = transport, task, poll_wait, halt_before
        secure = task.spec.strategy.secure_aggregation
        assert secure is not None
        self.give_up_at = time.monotonic() + task.spec.round_timeout + 5 * secure.stage_timeout_s

    def run(self, delta: Params) -> str:
        """Take part with ``delta``; what happened, in words (the round's sum is the hub's to compute)."""
        try:
            setup = self._read("setup", RoundSetup)
            log.info("task %s: secure aggregation of round %s among %d nodes, threshold %d", self.task.id,
                     setup.config.round, len(setup.config.clients), setup.config.threshold)
            client = SecAggClient(setup.config, str(self.task.id))
            vector = setup.quantiser().quantise(flatten(delta))
            self._post("advertise_keys", client.advertise())
            self._post("share_keys", client.share_keys(self._read("keys", KeyDirectory)))
            self._post("masked_input", client.masked_input(self._read("shares", ShareInbox), vector))
            self._post("unmask", client.unmask(self._read("unmask", UnmaskRequest)))
        except (StoppedTakingPart, SecAggError, ValidationError) as exc:
            log.warning("task %s left secure aggregation: %s", self.task.id, exc)
            return f"left secure aggregation: {exc}"
        return "masked update summed"

    def _read(self, stage: str, model: type[M]) -> M:
        from consortium.client import HubError

        while time.monotonic() < self.give_up_at:
            try:
                body = self.transport.secagg_read(self.task.id, stage, self.poll_wait)
            except HubError as exc:
                if exc.status_code in ENDED:
                    raise StoppedTakingPart(exc.detail) from None
                raise
            if body is not None:
                return model.model_validate_json(body)
        raise StoppedTakingPart(f"the hub published no {stage!r} in time")

    def _post(self, stage: str, message: BaseModel) -> None:
        from consortium.client import HubError

        if stage == self.halt_before:
            log.warning("task %s: halting before the %s stage (CONSORTIUM_SECAGG_HALT_BEFORE)", self.task.id, stage)
            threading.Event().wait()
        try:
            self.transport.secagg_post(self.task.id, stage, _wire_bytes(message))
        except HubError as exc:
            if exc.status_code in ENDED or exc.status_code == 422:
                raise StoppedTakingPart(exc.detail) from None
            raise
        log.info("task %s: sent its %s message", self.task.id, stage)


def _wire_bytes(message: BaseModel) -> bytes:
    """A message as it travels: a masked input as its binary frame, the others as JSON."""
    wire = to_wire(message)
    return wire if isinstance(wire, bytes) else wire.encode()
