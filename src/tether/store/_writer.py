"""The batch writer: one thread, one connection, group commit. Both SQL engines write
through it; a ``Dialect`` says how to speak transactions and errors to each.

Every commit costs a flush to disk (SQLite with ``synchronous=FULL``: an fsync; PostgreSQL:
a WAL flush and a round trip). Runs do not each open a transaction: they queue *operations*
here, and the writer thread applies every queued operation in one transaction, so a thousand
concurrent runs share one commit. One writer per process also gives the ordering the ``Store``
protocol promises: operations commit in the order they were submitted.

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
  (On PostgreSQL every statement is a network round trip: the same reasoning holds.)
  A bulk statement that cannot apply every operation (a stale fence, an existing run id) is
  rolled back, and that group is applied one operation at a time instead.
* Bulk kinds apply in phases: audit records (PostgreSQL: their tenant locks come first, in
  order, so batches of two workers never wait on each other crosswise), creations, then
  appends, then everything else in submission order (settling runs in bulk where
  consecutive). That order is safe because audit records depend on nothing else, a run only
  appends with a fence it already holds (its creation or claim committed in an earlier batch),
  and settles or parks only after its appends.
* A run whose write failed is *poisoned*: its later operations fail at once, so its journal can
  never have a gap (seq 5 lost, seq 6 committed). The runtime abandons the run; a fresh claim
  (a new fence, so a new key) replays it from what was committed.

* When a batch fails as a whole (the disk, the server, the connection), every run in it is
  poisoned, and the dialect may reconnect before the next batch (a PostgreSQL restart).

Approaches considered: a transaction per run step (one fsync per step, the cost this module
exists to avoid); an asyncio task driving the connection (an fsync blocks the event loop for
milliseconds; on PostgreSQL it would also make the batch logic async, and different from the
one SQLite uses); a pool of writer connections (SQLite serializes them on its lock anyway, and
on PostgreSQL submission order would no longer be commit order).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from tether.errors import StoreError, TetherError
from tether.store._protocol import Commit

logger = logging.getLogger("tether.store")

Apply = Callable[[Any], Any]  # applies an operation on the writer's connection
T = TypeVar("T")
RunKey = tuple[str, int]  # (run_id, fence)
_LAST_PHASE = 2
MAX_BATCH = 4096


@dataclass(frozen=True, slots=True, eq=False)
class Bulk:
    """A kind of operation the writer may apply many at a time.

    ``apply_many`` gets the payloads of consecutive operations of this kind and returns True
    when it applied every one; on False (or a driver error) the writer rolls the group back
    and applies each operation's own function instead.
    """

    name: str
    phase: int  # below 2 go first, by phase; 2 keeps submission order
    apply_many: Callable[[Any, list[Any]], bool]


class Dialect(Protocol):
    """What the writer needs to know about an engine and its driver."""

    @property
    def driver_error(self) -> type[Exception]:
        """The driver's base exception class (``sqlite3.Error``, ``psycopg.Error``)."""
        ...

    @property
    def begin(self) -> str:
        """The statement that starts a write transaction."""
        ...

    def in_transaction(self, conn: Any) -> bool: ...

    def store_error(self, exc: Exception, location: str) -> StoreError:
        """Map a driver error to Tether's tree, with advice a person can act on."""
        ...

    def recover(self, conn: Any) -> Any:
        """After a failed batch: the connection to use from now on (the same one, or a new
        one when it broke). May raise the driver's error when it cannot reconnect yet."""
        ...


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


class BatchWriter:
    """Applies queued operations in batches on a dedicated thread."""

    def __init__(self, conn: Any, dialect: Dialect, *, location: str, flush_interval: float,
                 flush_max: int, name: str) -> None:
        self.conn = conn
        self._dialect = dialect
        self._location = location
        self._flush_interval = flush_interval
        self._flush_max = flush_max
        # A plain lock under the condition, taken directly on the submit path: a C-level
        # ``with`` on every queued write instead of Condition's Python-level one over an RLock
        # (0.23 against 0.52 us here, on the event loop's thread). Nothing here nests it.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._ops: list[_Op] = []
        self._urgent = False
        self._deadline = 0.0
        self._closing = False
        self._poisoned: dict[RunKey, TetherError] = {}
        self._lost_with_batch: set[RunKey] = set()  # poisoned by a failed batch, not a fence
        self._orphans: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
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
        with self._lock:
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
            if run_key in self._lost_with_batch:
                self._lost_with_batch.discard(run_key)
                self._orphans.add(run_key[0])

    def take_orphans(self) -> list[str]:
        """Runs this process abandoned because a whole batch failed (the disk, the server, the
        connection), not because another worker took them: they are still ours in the store,
        and the next claim takes them back at once instead of waiting for the lease to lapse.
        ``give_back_orphans`` returns them when that claim fails too."""
        with self._cond:
            orphans, self._orphans = sorted(self._orphans), set()
        return orphans

    def give_back_orphans(self, run_ids: list[str]) -> None:
        with self._cond:
            self._orphans.update(run_ids)

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
        conn, dialect = self.conn, self._dialect
        outcomes: list[Outcome] = []
        try:
            conn.execute(dialect.begin)
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
        except dialect.driver_error as exc:
            # The whole batch is lost: every run in it must stop before writing past the gap.
            error = dialect.store_error(exc, self._location)
            with contextlib.suppress(dialect.driver_error):
                if dialect.in_transaction(conn):
                    conn.execute("ROLLBACK")
            with contextlib.suppress(dialect.driver_error):
                self.conn = dialect.recover(conn)  # if not now, after the next failed batch
            outcomes = []
            for op in ops:
                if op.run_key is not None:
                    self._poison(op.run_key, error)
                    with self._cond:
                        self._lost_with_batch.add(op.run_key)
                outcomes.append((op, False, error))
        for op, ok, value in outcomes:
            if not ok and op.future is None and op.run_key is None:
                # Nobody waits for it and no run stops for it: say so rather than drop it.
                logger.error("%s: a queued write failed and was dropped: %s", self._location,
                             value)
        waiting = [(op.future, ok, value) for op, ok, value in outcomes if op.future]
        if waiting and self._loop is not None:
            # RuntimeError: the event loop has closed, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_settle, waiting)

    def _apply_group(self, conn: Any, group: list[_Op]) -> list[Outcome]:
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
        except self._dialect.driver_error:
            applied = False
        if applied:
            conn.execute("RELEASE bulk")
            return outcomes + [(op, True, op.result) for op in live]
        conn.execute("ROLLBACK TO bulk")
        conn.execute("RELEASE bulk")
        return outcomes + [self._apply_one(conn, op) for op in live]

    def _apply_one(self, conn: Any, op: _Op) -> Outcome:
        """Run one operation; a failure is rolled back alone and poisons its claim."""
        if op.run_key is not None and op.run_key in self._poisoned:
            return op, False, self._poisoned[op.run_key]
        if not op.atomic:
            conn.execute("SAVEPOINT op")
        driver_error = self._dialect.driver_error
        try:
            result = op.apply(conn)
        except (TetherError, driver_error) as exc:
            if op.atomic and isinstance(exc, driver_error):
                raise  # it may have changed something: the whole batch must fail
            if not op.atomic:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            error = (exc if isinstance(exc, TetherError)
                     else self._dialect.store_error(exc, self._location))
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


class WriterStore:
    """What the SQL stores share about their ``BatchWriter``: submitting operations, the
    claims the runtime abandoned, and the runs a failed batch orphaned."""

    location: str
    _writer: BatchWriter | None

    def _submit(self, apply: Apply, commit: Commit, run_key: RunKey | None = None, *,
                bulk: Bulk | None = None, payload: Any = None) -> asyncio.Future[Any] | None:
        if self._writer is None:
            raise StoreError(f"{self.location} is not open")
        return self._writer.submit(apply, commit, run_key, bulk=bulk, payload=payload)

    def _write(self, apply: Callable[[Any], T], run_key: RunKey | None = None, *,
               atomic: bool = False, bulk: Bulk | None = None, payload: Any = None,
               result: Any = None) -> Awaitable[T]:
        """Queue an operation and return what waits for its commit."""
        if self._writer is None:
            raise StoreError(f"{self.location} is not open")
        future = self._writer.submit(apply, Commit.WAIT, run_key, atomic=atomic, bulk=bulk,
                                     payload=payload, result=result)
        assert future is not None
        return future

    def _take_orphans(self) -> list[str]:
        """This process's runs a failed batch orphaned, for the next claim to take back
        (``BatchWriter.take_orphans``); ``_write_claim`` keeps them if that claim fails."""
        return self._writer.take_orphans() if self._writer is not None else []

    async def _write_claim(self, apply: Callable[[Any], list[T]], orphans: list[str],
                           ) -> list[T]:
        try:
            return await self._write(apply)
        except StoreError:
            if orphans and self._writer is not None:
                self._writer.give_back_orphans(orphans)
            raise

    def forget_claim(self, run_id: str, fence: int) -> None:
        if self._writer is not None:
            self._writer.forget((run_id, fence))

    @property
    def batches(self) -> int:
        """Transactions committed so far (group commit makes this far below the writes)."""
        return 0 if self._writer is None else self._writer.batches
