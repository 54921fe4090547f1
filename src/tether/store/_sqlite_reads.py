"""How the SQLite store reads: on worker threads, over a few read-only connections of its own
(WAL lets them read while the writer writes), and how it reports sqlite3's errors. A base of
``SQLiteStore`` and of the parts mixed into it (governance, ledger), which read the same way."""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio

from tether.errors import StoreCorrupt, StoreError
from tether.store._writer import WriterStore

T = TypeVar("T")

READ_CONNECTIONS = 4


def store_error(exc: Exception, location: str) -> StoreError:
    """Map an sqlite3 error to Tether's tree, with advice a person can act on."""
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and (
            "malformed" in text or "not a database" in text):
        return StoreCorrupt(f"{location} is damaged ({text}); restore it from a backup, "
                            "or point --db at another file")
    if "locked" in text or "busy" in text:
        return StoreError(f"{location} is locked by another process for too long ({text})")
    return StoreError(f"{location}: {text}")


class SQLiteReads(WriterStore):
    """Pooled read connections to ``path``."""

    path: Path

    def __init__(self) -> None:
        # Read connections, reused: at most READ_CONNECTIONS reads run at once (a connection
        # per thread held 40 of them, and their page caches, in a worker resuming 1,000 runs).
        self._idle_readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._read_limiter: anyio.CapacityLimiter | None = None

    def _reader(self) -> sqlite3.Connection:
        try:
            return self._idle_readers.get_nowait()
        except queue.Empty:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA query_only = 1")
            with self._readers_lock:
                self._readers.append(conn)
            return conn

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            conn = self._reader()
            try:
                return query(conn)
            except sqlite3.Error as exc:
                raise store_error(exc, self.location) from None
            finally:
                self._idle_readers.put(conn)
        if self._read_limiter is None:
            self._read_limiter = anyio.CapacityLimiter(READ_CONNECTIONS)
        return await anyio.to_thread.run_sync(run, limiter=self._read_limiter)

    def _close_readers(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
            self._idle_readers = queue.SimpleQueue()
        for conn in readers:
            conn.close()
