"""A real hub keeps a node's idle keep-alive connection open past uvicorn's default 5 s: a node trains between
receiving its task and uploading on the same connection."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from consortium.launch import start_hub

pytestmark = pytest.mark.e2e

REQUEST = b"GET /api/health HTTP/1.1\r\nHost: hub\r\n\r\n"


def _answer(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    return data


def test_an_idle_connection_is_still_open_after_six_seconds(tmp_path: Path) -> None:
    hub = start_hub(tmp_path / "hub")
    try:
        where = urlsplit(hub.url)
        with socket.create_connection((where.hostname, where.port), timeout=10) as conn:
            conn.sendall(REQUEST)
            assert _answer(conn).startswith(b"HTTP/1.1 200")
            time.sleep(6.0)
            conn.sendall(REQUEST)
            assert _answer(conn).startswith(b"HTTP/1.1 200")
    finally:
        hub.stop()
