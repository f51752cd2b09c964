"""Hub replicas on one PostgreSQL database: the broker's wake-ups cross processes through LISTEN/NOTIFY.

:class:`ReplicaBroker` is the in-process :class:`~consortium.hub.events.Broker` that also publishes every
``notify(key)`` on the channel ``consortium`` (a sender thread with its own connection, so no caller waits for
the database) and forwards what the other replicas publish to its own waiters: a node long-polling replica B
wakes when the driver on replica A opens its task (``org:<id>``), a watcher on B when A checkpoints a round
(``progress:<id>``), and the driver on A when B committed an answer to one of its tasks
(``answer:<run id>:<task id>:<done|failed>``, :meth:`LivePhase.nudge`). A lost notification costs latency
only: drivers still ask the database every ``recheck_s`` and long polls end at their ``wait``.

The keys published together (a phase's orgs) travel as few notifications as PostgreSQL's payload limit
allows, one key per line: a phase of 100 orgs is one ``pg_notify`` and one wake-up of the other replicas'
event loops, not a hundred of each.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator

import psycopg
from sqlalchemy.engine import make_url

from consortium.hub.events import Broker

log = logging.getLogger("consortium.replicas")

CHANNEL = "consortium"
RETRY_S = 1.0
MAX_PAYLOAD_BYTES = 7999
"""PostgreSQL refuses a notification payload of 8,000 bytes or more."""


def libpq_url(sqlalchemy_url: str) -> str:
    """The ``postgresql://`` URL psycopg connects with, from the hub's SQLAlchemy URL."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


def payloads(sender: str, keys: Iterable[str]) -> Iterator[str]:
    """``keys`` as notification payloads: the sender's id, a space, then keys one per line, each payload under
    :data:`MAX_PAYLOAD_BYTES` (UTF-8)."""
    head, lines, size = f"{sender} ", [], 0
    for key in keys:
        grown = size + len(key.encode()) + (1 if lines else 0)
        if lines and len(head.encode()) + grown > MAX_PAYLOAD_BYTES:
            yield head + "\n".join(lines)
            lines, grown = [], len(key.encode())
        lines.append(key)
        size = grown
    if lines:
        yield head + "\n".join(lines)


class ReplicaBroker(Broker):
    """A broker whose notifications reach every replica (see the module)."""

    def __init__(self, db_url: str, replica_id: str, on_answer: Callable[[str], None] = lambda _key: None) -> None:
        super().__init__()
        self._url, self._replica_id, self._on_answer = libpq_url(db_url), replica_id, on_answer
        self._outbox: queue.Queue[tuple[str, ...] | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.listening = threading.Event()
        """Set once the listener's LISTEN is in place (and again after each reconnect)."""

    def start(self) -> None:
        for target, name in ((self._listen, "replica-listen"), (self._send, "replica-notify")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self, timeout: float = 3.0) -> None:
        self._stop.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(timeout)

    def notify_many(self, keys: Iterable[str]) -> None:
        keys = tuple(keys)
        if any("\n" in key for key in keys):
            raise ValueError(f"a broker key may not contain a line break: {keys!r}")
        super().notify_many(keys)
        self._outbox.put(keys)

    def _deliver(self, payload: str) -> None:
        sender, _, lines = payload.partition(" ")
        keys = [key for key in lines.split("\n") if key]
        if sender == self._replica_id or not keys:
            return
        super().notify_many(keys)
        for key in keys:
            if key.startswith("answer:"):
                self._on_answer(key)

    def _send(self) -> None:
        conn: psycopg.Connection | None = None
        while not self._stop.is_set():
            first = self._outbox.get()
            if first is None:
                break
            keys = set(first)
            while not self._outbox.empty():  # a burst goes out in one round trip
                more = self._outbox.get_nowait()
                if more is None:
                    self._stop.set()
                    break
                keys.update(more)
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self._url, autocommit=True)
                with conn.pipeline():
                    for payload in payloads(self._replica_id, sorted(keys)):
                        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            except psycopg.Error:
                log.warning("replica %s: could not publish %s; the others learn it from the database",
                            self._replica_id, sorted(keys), exc_info=True)
                conn = None
                self._stop.wait(RETRY_S)
        if conn is not None:
            conn.close()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._deliver(note.payload)
            except psycopg.Error:
                self.listening.clear()
                log.warning("replica %s: listener lost its connection; reconnecting", self._replica_id,
                            exc_info=True)
                self._stop.wait(RETRY_S)
