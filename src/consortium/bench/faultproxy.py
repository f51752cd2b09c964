"""A small fault-injecting TCP proxy (asyncio, in a thread of its own) for the fault harness.

Nodes talk to the hub through it; each new connection, drawn from a seeded generator, is passed as is, cut
after a random number of bytes (up to ``max_cut_bytes``, counted over both directions and every request the
kept-alive connection carries: the peer sees the connection end mid-request or mid-answer), or passed with
a delay added to each chunk it forwards.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class ProxyStats:
    connections: int = 0
    cut: int = 0
    delayed: int = 0


@dataclass
class FaultProxy:
    """Listens on 127.0.0.1:``port`` (0: a free one) and forwards to ``target_port``; ``cut`` and ``delay``
    are the probabilities a connection is cut or delayed, ``max_delay_s`` the largest delay per chunk."""

    target_port: int
    cut: float = 0.2
    delay: float = 0.3
    max_delay_s: float = 0.2
    max_cut_bytes: int = 65536
    seed: int = 0
    port: int = 0
    stats: ProxyStats = field(default_factory=ProxyStats)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, args=(sock,), name="fault-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        if self._thread is not None:
            self._thread.join(5)

    async def _shutdown(self) -> None:
        """Close the listener and every connection, then stop the loop."""
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.get_running_loop().stop()

    def _run(self, sock: socket.socket) -> None:
        self._loop = loop = asyncio.new_event_loop()
        self._server = loop.run_until_complete(asyncio.start_server(self._handle, sock=sock))
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        draw = self._rng.random()
        cut_after = self._rng.randint(1, self.max_cut_bytes) if draw < self.cut else None
        delay = self._rng.uniform(0, self.max_delay_s) if self.cut <= draw < self.cut + self.delay else 0.0
        self.stats.cut += cut_after is not None
        self.stats.delayed += delay > 0
        try:
            hub_reader, hub_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        budget = [cut_after]

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    if budget[0] is not None:
                        if len(data) >= budget[0]:
                            writer.write(data[: budget[0]])
                            raise ConnectionResetError("cut by the fault proxy")
                        budget[0] -= len(data)
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:  # one side ended (or was cut): so does the whole connection
                client_writer.close()
                hub_writer.close()

        await asyncio.gather(pipe(client_reader, hub_writer), pipe(hub_reader, client_writer))
