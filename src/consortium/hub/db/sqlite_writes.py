"""One writer at a time on a SQLite hub database, queued in the hub process rather than in SQLite.

SQLite lets one transaction write at a time. A connection that finds the write lock taken waits in SQLite's
busy handler, which sleeps in growing steps (1, 2, 5, 10, ... up to 100 ms) between tries: with a hundred
node uploads arriving together, their transactions mostly slept, and the round waited for them
(`consortium bench scale`, docs/scale.md). Here each connection takes a process-wide lock when its
transaction writes first (Python's sqlite3 begins a transaction at the first INSERT, UPDATE, DELETE or
REPLACE, so that is where SQLite would take its write lock too) and gives it back once the commit or
rollback is done, so a waiting writer starts the moment the previous one finished. Reads are not gated (WAL
readers never wait for the writer). A transaction that waits longer than ``timeout_s`` for the lock goes on
to SQLite's own busy handling, as before.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from sqlalchemy import Engine, event

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class GatedConnection(sqlite3.Connection):
    """A sqlite3 connection that holds its engine's write gate from its first write to its commit or rollback."""

    gate: threading.Lock
    timeout_s: float = 30.0
    holding: bool = False

    def hold_gate(self) -> None:
        if not self.holding:
            self.holding = self.gate.acquire(timeout=self.timeout_s)

    def release_gate(self) -> None:
        if self.holding:
            self.holding = False
            self.gate.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.release_gate()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.release_gate()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.release_gate()


def gated_factory(timeout_s: float = 30.0) -> type[GatedConnection]:
    """A connection class with its own gate: one per engine (each database file has its own writer)."""
    return type("GatedConnection", (GatedConnection,), {"gate": threading.Lock(), "timeout_s": timeout_s})


def gate_writes(engine: Engine) -> None:
    """Take the gate before the first write statement of each transaction on ``engine``'s connections."""

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        dbapi = conn.connection.dbapi_connection
        if isinstance(dbapi, GatedConnection) and not dbapi.holding and \
                statement.lstrip()[:7].upper().startswith(WRITES):
            dbapi.hold_gate()
