"""One round's secure aggregation inside a hub process, shared by the run driver and the node endpoints.

The driver registers a :class:`SecAggRound` for a fit phase's tasks when it opens the phase (so a node that
finished training early already finds it), starts it with the :class:`RoundSetup` once the trained nodes are
known, then closes the four stages one by one. The node endpoints hand it each client message (a node is
client ``str(task_id)``) and read what the server published for the node (the setup, the key directory,
its share inbox, the unmask request). Everything is in memory: a hub restart abandons the round anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from pydantic import BaseModel

from consortium.fl.privacy.secagg.errors import MessageError, WrongStage
from consortium.fl.privacy.secagg.messages import parse_client_message
from consortium.fl.privacy.secagg.server import SecAggServer
from consortium.fl.privacy.secagg.setup import RoundSetup

POSTED_STAGES = ("advertise_keys", "share_keys", "masked_input", "unmask")
"""What a node sends, in order (the path's last part on POST)."""
READ_STAGES = ("setup", "keys", "shares", "unmask")
"""What a node reads, in order (the path's last part on GET): each becomes readable when the stage before
it closes."""
MAX_NOTED_REFUSALS = 32
"""How many refused messages a round notes by name (their count is kept beyond that)."""
SETUP_BYTES = 256 * 1024
"""Bound on a message's JSON besides its masked vector (keys, sealed shares, revealed shares)."""


def secagg_key(round_id: int) -> str:
    """Broker key that nodes long-polling a round's secure aggregation wait on."""
    return f"secagg:{round_id}"


class SecAggRound:
    """A fit phase's secure aggregation: its members (task id -> org id), the server once started, and what
    it published per stage. ``notify`` wakes the long polls (the hub's broker)."""

    def __init__(self, round_id: int, members: dict[int, int], notify: Callable[[str], None]) -> None:
        self.round_id, self.members = round_id, dict(members)
        self._notify = notify
        self._changed = threading.Condition()
        self.server: SecAggServer | None = None
        self._published: dict[str, BaseModel | dict[str, BaseModel]] = {}
        self.ended: str | None = None
        """Why the round takes no more messages (closed, aborted); None while it runs."""
        self.refused: list[str] = []
        """Problems of the messages refused (the first :data:`MAX_NOTED_REFUSALS`), for the ledger entry."""
        self.refusals = 0

    def org_of(self, task_id: int) -> int | None:
        return self.members.get(task_id)

    def max_body(self) -> int:
        """The largest message body this round accepts (a masked vector's base64, plus the rest)."""
        length = self.server.config.vector_length if self.server is not None else 0
        return SETUP_BYTES + 4 * ((4 * length + 2) // 3)

    def start(self, setup: RoundSetup) -> None:
        with self._changed:
            self.server = SecAggServer(setup.config)
            self._published["setup"] = setup
        self._notify(secagg_key(self.round_id))

    def publish(self, stage: str, message: BaseModel | dict[str, BaseModel]) -> None:
        """What nodes read for ``stage`` (one message for all, or one per client id)."""
        with self._changed:
            self._published[stage] = message
        self._notify(secagg_key(self.round_id))

    def end(self, why: str) -> None:
        with self._changed:
            self.ended = why
            self._changed.notify_all()
        self._notify(secagg_key(self.round_id))

    def read(self, task_id: int, stage: str) -> str | None:
        """The JSON published for ``task_id`` at ``stage``; None while it is not published yet.
        LookupError (with why) when the round ended or left this node out."""
        with self._changed:
            published = self._published.get(stage)
            if published is None:
                if self.ended is not None:
                    raise LookupError(self.ended)
                return None
            if isinstance(published, dict):
                published = published.get(str(task_id))
                if published is None:
                    raise LookupError(f"task {task_id} dropped out of round {self.round_id}'s secure aggregation")
            return published.model_dump_json()

    def receive(self, task_id: int, stage: str, body: bytes) -> None:
        """Check and keep one node message; MessageError naming the problem (the round goes on)."""
        try:
            message = parse_client_message(body)
            if message.stage != stage:
                raise WrongStage(f"a {message.stage!r} message was posted as {stage!r}")
            if message.sender != str(task_id):
                raise WrongStage(f"task {task_id} posted a message sent by {message.sender!r}")
            with self._changed:
                if self.server is None or self.ended is not None:
                    raise WrongStage(f"round {self.round_id}'s secure aggregation is "
                                     f"{'over' if self.ended else 'not started yet'}")
                self.server.receive(message)
                self._changed.notify_all()
        except MessageError as exc:
            with self._changed:
                self.refusals += 1
                if len(self.refused) < MAX_NOTED_REFUSALS:
                    self.refused.append(f"task {task_id}: {exc}"[:300])
            raise

    def arrived(self, stage: str) -> set[str]:
        """Clients whose message of ``stage`` the server holds."""
        with self._changed:
            return set(self._store(stage))

    def _store(self, stage: str) -> Iterable[str]:
        server = self.server
        assert server is not None
        return {"advertise_keys": server.keys, "share_keys": server.shares, "masked_input": server.masked,
                "unmask": server.revealed}[stage]

    def wait(self, stage: str, expected: set[str], timeout: float) -> bool:
        """Block until every ``expected`` client's ``stage`` message is in (True) or ``timeout`` passes."""
        with self._changed:
            return self._changed.wait_for(lambda: expected <= set(self._store(stage)), max(0.0, timeout))

    def close(self, close: Callable[[], object]) -> object:
        """Run one of the server's ``close_*`` methods under the round's lock."""
        with self._changed:
            return close()
