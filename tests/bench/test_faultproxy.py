"""The fault proxy: passes bytes both ways, cuts a connection after some bytes, delays chunks."""

from __future__ import annotations

import socket
import socketserver
import threading
import time

from consortium.bench.faultproxy import FaultProxy


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


def echo_server() -> socketserver.ThreadingTCPServer:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        got = b""
        try:
            while len(got) < len(payload) and (chunk := sock.recv(65536)):
                got += chunk
        except ConnectionResetError:
            pass
        return got


def test_a_clean_connection_passes_and_a_cut_one_ends_short() -> None:
    server = echo_server()
    try:
        clean = FaultProxy(server.server_address[1], cut=0.0, delay=0.0).start()
        cutting = FaultProxy(server.server_address[1], cut=1.0, delay=0.0, max_cut_bytes=100).start()
        try:
            assert exchange(clean.port, b"x" * 5000) == b"x" * 5000
            assert len(exchange(cutting.port, b"y" * 5000)) < 5000
            assert (clean.stats.connections, clean.stats.cut) == (1, 0)
            assert (cutting.stats.connections, cutting.stats.cut) == (1, 1)
        finally:
            clean.stop()
            cutting.stop()
    finally:
        server.shutdown()


def test_a_delayed_connection_arrives_late_but_whole() -> None:
    server = echo_server()
    proxy = FaultProxy(server.server_address[1], cut=0.0, delay=1.0, max_delay_s=0.3, seed=3).start()
    try:
        started = time.monotonic()
        assert exchange(proxy.port, b"z" * 1000) == b"z" * 1000
        assert proxy.stats.delayed == 1 and time.monotonic() - started > 0.01
    finally:
        proxy.stop()
        server.shutdown()
