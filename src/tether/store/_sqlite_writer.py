"""The SQLite writer: one thread, one connection, group commit.

SQLite allows one writer at a time, and each commit with ``synchronous=FULL`` costs an fsync.
Runs do not each open a transaction: they queue *operations* here, and the writer thread applies
every queued operation in one transaction, so a thousand concurrent runs share one fsync.

* An operation queued with ``Commit.WAIT`` or ``Commit.SOON`` starts a batch at once; a
  ``Commit.LAZY`` one waits for the next batch, at most ``flush_interval`` seconds (or until
  ``flush_max`` operations are queued). The bound is what a crash can lose of lazy writes.
* Operations apply in submission order, each inside a savepoint: one that fails (a stale
  fence, say) is rolled back alone and the rest of the batch commits.
* A run whose write failed is *poisoned*: its later operations fail at once, so its journal can
  never have a gap (seq 5 lost, seq 6 committed). The runtime abandons the run; a fresh claim
  (a new fence, so a new key) replays it from what was committed.

Approaches considered: a transaction per run step (one fsync per step, the cost this module
exists to avoid); an asyncio task driving the connection (an fsync blocks the event loop for
milliseconds); a pool of writer connections (SQLite serializes them on its lock anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from tether.errors import StoreCorrupt, StoreError, TetherError
from tether.store._protocol import Commit

Apply = Callable[[sqlite3.Connection], Any]
RunKey = tuple[str, int]  # (run_id, fence)


def store_error(exc: sqlite3.Error, location: str) -> StoreError:
    """Map an sqlite3 error to Tether's tree, with advice a person can act on."""
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and (
            "malformed" in text or "not a database" in text):
        return StoreCorrupt(f"{location} is damaged ({text}); restore it from a backup, "
                            "or point --db at another file")
    if "locked" in text or "busy" in text:
        return StoreError(f"{location} is locked by another process for too long ({text})")
    return StoreError(f"{location}: {text}")


class _Op:
    __slots__ = ("apply", "future", "run_key")

    def __init__(self, apply: Apply, future: asyncio.Future[Any] | None,
                 run_key: RunKey | None) -> None:
        self.apply, self.future, self.run_key = apply, future, run_key


class SQLiteWriter:
    """Applies queued operations in batches on a dedicated thread."""

    def __init__(self, conn: sqlite3.Connection, *, location: str, flush_interval: float,
                 flush_max: int) -> None:
        self._conn = conn
        self._location = location
        self._flush_interval = flush_interval
        self._flush_max = flush_max
        self._cond = threading.Condition()
        self._ops: list[_Op] = []
        self._urgent = False
        self._deadline = 0.0
        self._closing = False
        self._poisoned: dict[RunKey, TetherError] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name="tether-sqlite-writer",
                                        daemon=True)
        self.batches = 0  # committed transactions, for tests and benchmarks

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def submit(self, apply: Apply, commit: Commit, run_key: RunKey | None = None,
               ) -> asyncio.Future[Any] | None:
        """Queue an operation; returns a future for ``Commit.WAIT``, else None."""
        assert self._loop is not None, "writer not started"
        future = self._loop.create_future() if commit is Commit.WAIT else None
        with self._cond:
            if self._closing:
                raise StoreError(f"{self._location} is closed")
            if run_key is not None and run_key in self._poisoned:
                error = self._poisoned[run_key]
                if future is None:
                    raise error
                future.set_exception(error)
                return future
            self._ops.append(_Op(apply, future, run_key))
            if commit is not Commit.LAZY:
                self._urgent = True
                self._cond.notify()
            elif len(self._ops) == 1:
                self._deadline = time.monotonic() + self._flush_interval
                self._cond.notify()
            elif len(self._ops) >= self._flush_max:
                self._cond.notify()
        return future

    def forget(self, run_key: RunKey) -> None:
        """Drop a poisoned run's failure once the runtime has abandoned that claim."""
        with self._cond:
            self._poisoned.pop(run_key, None)

    def close(self) -> None:
        """Commit everything queued, then stop the thread (blocking; call from a thread)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    # -- writer thread ---------------------------------------------------------------------

    def _main(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._urgent or (self._closing and self._ops):
                        break
                    if self._closing:
                        return
                    if self._ops:
                        remaining = self._deadline - time.monotonic()
                        if remaining <= 0 or len(self._ops) >= self._flush_max:
                            break
                        self._cond.wait(remaining)
                    else:
                        self._cond.wait()
                ops, self._ops, self._urgent = self._ops, [], False
            self._run_batch(ops)

    def _run_batch(self, ops: list[_Op]) -> None:
        conn = self._conn
        outcomes: list[tuple[_Op, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in ops:
                if op.run_key is not None and op.run_key in self._poisoned:
                    outcomes.append((op, False, self._poisoned[op.run_key]))
                    continue
                conn.execute("SAVEPOINT op")
                try:
                    result = op.apply(conn)
                except (TetherError, sqlite3.Error) as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    error = exc if isinstance(exc, TetherError) else store_error(exc, self._location)
                    if op.run_key is not None:
                        self._poison(op.run_key, error)
                    outcomes.append((op, False, error))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((op, True, result))
            conn.execute("COMMIT")
            self.batches += 1
        except sqlite3.Error as exc:
            # The whole batch is lost: every run in it must stop before writing past the gap.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = store_error(exc, self._location)
            outcomes = []
            for op in ops:
                if op.run_key is not None:
                    self._poison(op.run_key, error)
                outcomes.append((op, False, error))
        waiting = [(op.future, ok, value) for op, ok, value in outcomes if op.future]
        if waiting and self._loop is not None:
            # RuntimeError: the event loop has closed, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_settle, waiting)

    def _poison(self, run_key: RunKey, error: TetherError) -> None:
        with self._cond:
            self._poisoned[run_key] = error


def _settle(waiting: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in waiting:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
