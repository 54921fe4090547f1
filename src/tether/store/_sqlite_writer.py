"""The SQLite writer: one thread, one connection, group commit.

SQLite allows one writer at a time, and each commit with ``synchronous=FULL`` costs an fsync.
Runs do not each open a transaction: they queue *operations* here, and the writer thread applies
every queued operation in one transaction, so a thousand concurrent runs share one fsync.

* An operation queued with ``Commit.WAIT`` or ``Commit.SOON`` starts a batch at once; a
  ``Commit.LAZY`` one waits for the next batch, at most ``flush_interval`` seconds, or until
  ``flush_max`` operations are queued. (How far a run may run ahead of its commits is bounded
  by the journal: see ``RunJournal.lazy_commit``.)
* Operations apply inside savepoints: one that fails (a stale fence, say) is rolled back alone
  and the rest of the batch commits.
* The high-volume operations (creating runs, appending journal records, settling runs) are
  applied in *bulk*: a few statements for the whole batch, passing JSON arrays that SQLite
  unpacks itself. Why: the sqlite3 module releases the GIL around every row it steps, and
  taking it back from a busy event loop costs up to the interpreter's switch interval (5 ms).
  Row by row, 10,000 concurrent runs made batches of 2.3 s of wall time for 0.1 s of work.
  A bulk statement that cannot apply every operation (a stale fence, an existing run id) is
  rolled back, and that group is applied one operation at a time instead.
* Bulk kinds apply in phases: creations, then appends, then everything else in submission
  order (settling runs in bulk where consecutive). That order is safe because a run only
  appends with a fence it already holds (its creation or claim committed in an earlier batch),
  and settles or parks only after its appends.
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
from dataclasses import dataclass
from typing import Any

from tether.errors import StoreCorrupt, StoreError, TetherError
from tether.store._protocol import Commit

Apply = Callable[[sqlite3.Connection], Any]
RunKey = tuple[str, int]  # (run_id, fence)
_LAST_PHASE = 2
MAX_BATCH = 4096


@dataclass(frozen=True, slots=True, eq=False)
class Bulk:
    """A kind of operation the writer may apply many at a time.

    ``apply_many`` gets the payloads of consecutive operations of this kind and returns True
    when it applied every one; on False (or an sqlite3 error) the writer rolls the group back
    and applies each operation's own function instead.
    """

    name: str
    phase: int  # 0 and 1 go before everything else; 2 keeps submission order
    apply_many: Callable[[sqlite3.Connection, list[Any]], bool]


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
    __slots__ = ("apply", "atomic", "bulk", "future", "payload", "result", "run_key")

    def __init__(self, apply: Apply, future: asyncio.Future[Any] | None,
                 run_key: RunKey | None, atomic: bool, bulk: Bulk | None, payload: Any,
                 result: Any) -> None:
        self.apply = apply  # applies this operation alone (the careful path)
        self.future, self.run_key, self.atomic = future, run_key, atomic
        self.bulk, self.payload, self.result = bulk, payload, result  # result: if applied in bulk

    @property
    def phase(self) -> int:
        return _LAST_PHASE if self.bulk is None else self.bulk.phase


Outcome = tuple[_Op, bool, Any]


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

    def submit(self, apply: Apply, commit: Commit, run_key: RunKey | None = None, *,
               atomic: bool = False, bulk: Bulk | None = None, payload: Any = None,
               result: Any = None) -> asyncio.Future[Any] | None:
        """Queue an operation; returns a future for ``Commit.WAIT``, else None.

        Args:
            apply: applies the operation alone.
            run_key: the run and fence it writes for; a failure poisons that claim.
            atomic: ``apply`` raises a ``TetherError`` before changing anything or succeeds,
                so it needs no savepoint (two statements fewer).
            bulk, payload, result: the operation's bulk kind, its data for ``apply_many``,
                and what it returns when applied in bulk.
        """
        assert self._loop is not None, "writer not started"
        with self._cond:
            if self._closing:
                raise StoreError(f"{self._location} is closed")
            future = self._loop.create_future() if commit is Commit.WAIT else None
            if run_key is not None and run_key in self._poisoned:
                error = self._poisoned[run_key]
                if future is None:
                    raise error
                future.set_exception(error)
                return future
            self._ops.append(_Op(apply, future, run_key, atomic, bulk, payload, result))
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
                # At most MAX_BATCH operations per transaction: a bigger one only holds more
                # memory and makes every waiter in it wait longer.
                ops, self._ops = self._ops[:MAX_BATCH], self._ops[MAX_BATCH:]
                self._urgent = bool(self._ops)
            self._run_batch(ops)

    def _run_batch(self, ops: list[_Op]) -> None:
        conn = self._conn
        outcomes: list[Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            ordered = sorted(ops, key=lambda op: op.phase)  # stable: submission order kept
            start = 0
            while start < len(ordered):
                kind = ordered[start].bulk
                end = start + 1
                while kind is not None and end < len(ordered) and ordered[end].bulk is kind:
                    end += 1
                outcomes += self._apply_group(conn, ordered[start:end])
                start = end
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

    def _apply_group(self, conn: sqlite3.Connection, group: list[_Op]) -> list[Outcome]:
        """Apply consecutive operations of one bulk kind together, or one operation alone."""
        outcomes: list[Outcome] = []
        live: list[_Op] = []
        for op in group:
            if op.run_key is not None and op.run_key in self._poisoned:
                outcomes.append((op, False, self._poisoned[op.run_key]))
            else:
                live.append(op)
        kind = live[0].bulk if live else None
        if kind is None or len(live) == 1:
            return outcomes + [self._apply_one(conn, op) for op in live]
        conn.execute("SAVEPOINT bulk")
        try:
            applied = kind.apply_many(conn, [op.payload for op in live])
        except sqlite3.Error:
            applied = False
        if applied:
            conn.execute("RELEASE bulk")
            return outcomes + [(op, True, op.result) for op in live]
        conn.execute("ROLLBACK TO bulk")
        conn.execute("RELEASE bulk")
        return outcomes + [self._apply_one(conn, op) for op in live]

    def _apply_one(self, conn: sqlite3.Connection, op: _Op) -> Outcome:
        """Run one operation; a failure is rolled back alone and poisons its claim."""
        if op.run_key is not None and op.run_key in self._poisoned:
            return op, False, self._poisoned[op.run_key]
        if not op.atomic:
            conn.execute("SAVEPOINT op")
        try:
            result = op.apply(conn)
        except (TetherError, sqlite3.Error) as exc:
            if op.atomic and isinstance(exc, sqlite3.Error):
                raise  # it may have changed something: the whole batch must fail
            if not op.atomic:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            error = exc if isinstance(exc, TetherError) else store_error(exc, self._location)
            if op.run_key is not None:
                self._poison(op.run_key, error)
            return op, False, error
        if not op.atomic:
            conn.execute("RELEASE op")
        return op, True, result

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
