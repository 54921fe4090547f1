"""``PostgresStore``: many workers, on many machines, sharing one PostgreSQL database.

* Writes go through the same ``BatchWriter`` as SQLite's (group commit, bulk statements,
  poisoning), on one dedicated connection per process: one ordered commit stream is what the
  ``Store`` protocol promises, and batching is what keeps a step at a fraction of a round trip.
* Reads run on a small async connection pool (``psycopg_pool``), beside the writer.
* Workers coordinate through the database only: claims take rows with ``FOR UPDATE SKIP
  LOCKED`` (two workers never wait on, or take, the same run), every write checks its fence
  under a row lock (``_postgres_sql``), and every claim is logged in ``claims``.
* ``LISTEN/NOTIFY`` wakes idle workers at once for new runs, delivered signals, released runs
  and newly parked timers; polling (``poll_interval_seconds``) remains the safety net.
* Tables live in a PostgreSQL schema of their own (``?schema=NAME`` in the URL; ``tether`` by
  default), so Tether shares a database with anything else, and tests get a fresh one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import threading
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import psycopg
import psycopg_pool
from psycopg import pq

from tether.errors import ConfigError, LeaseLost, SchemaTooNew, StoreCorrupt, StoreError
from tether.store._common import (
    RECORD_COLUMNS,
    RUN_COLUMNS,
    check_resolvable,
    failed_by_operator,
    new_run_row,
    record_row,
    refuse_signal_if_ended,
    resolved_record,
    run_from_row,
    runs_filter,
)
from tether.store._postgres_governance import PostgresGovernance
from tether.store._postgres_ledger import PostgresLedger
from tether.store._postgres_reads import store_error
from tether.store._postgres_sql import (
    Append,
    Conn,
    Finish,
    append,
    bulk_kinds,
    check_fence,
    deliver,
    finish_runs,
    log_claims,
    notify,
    notify_parents,
    require_run,
    settle,
    upsert_rows,
)
from tether.store._protocol import (
    MISSING,
    Claim,
    Commit,
    Created,
    Missing,
    NewRun,
    OwnerIsDead,
    Record,
    RecordState,
    Waker,
)
from tether.store._writer import BatchWriter
from tether.types import JSONObject, Run, RunStatus

T = TypeVar("T")

SCHEMA_VERSION = 3
MIGRATIONS = {1: "postgres_0001_init.sql", 2: "postgres_0002_governance.sql",
              3: "postgres_0003_limits.sql"}
READ_CONNECTIONS = 4
CONNECT_TIMEOUT_SECONDS = 10
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")
_MIGRATION_LOCK = 0x7E7E_0001  # advisory lock id: one process migrates a schema at a time


def split_url(url: str) -> tuple[str, str, str]:
    """``postgresql://...?schema=NAME`` -> (conninfo without ``schema``, schema, location).

    The location is for messages: the URL with any password masked.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for key, value in query if key == "schema"), "tether")
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigError(f"db {url!r}: schema must be lower-case letters, digits and _ "
                          f"(at most 48), not {schema!r}")
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    conninfo = urlunsplit(parts._replace(query=rest))
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    location = urlunsplit(parts._replace(netloc=netloc, query=f"schema={schema}"))
    return conninfo, schema, location


def connect(conninfo: str, schema: str, role: str) -> Conn:
    """A connection working in ``schema`` (autocommit: the writer says BEGIN and COMMIT
    itself). Named after its ``role``, so an operator sees in ``pg_stat_activity`` what each
    connection is for."""
    return psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                           application_name=f"tether-{role}:{schema}",
                           options=f"-c search_path={schema}")


class _PostgresDialect:
    driver_error: ClassVar[type[Exception]] = psycopg.Error
    begin: ClassVar[str] = "BEGIN"

    def __init__(self, connect: Callable[[], Conn]) -> None:
        self._connect = connect

    def in_transaction(self, conn: Conn) -> bool:
        return conn.info.transaction_status != pq.TransactionStatus.IDLE

    def store_error(self, exc: Exception, location: str) -> StoreError:
        return store_error(exc, location)

    def recover(self, conn: Conn) -> Conn:
        if not (conn.closed or conn.broken):
            return conn
        conn.close()
        return self._connect()  # the server is back, or this raises and the next batch retries


class PostgresStore(PostgresGovernance, PostgresLedger):
    """Runs, journals and signals in PostgreSQL, shared by any number of workers."""

    def __init__(self, url: str, *, flush_interval_ms: int = 20,
                 flush_max_records: int = 1024) -> None:
        self._conninfo, self.schema, self.location = split_url(url)
        self._channel = f"tether_{self.schema}"
        self._flush_interval = flush_interval_ms / 1000
        self._flush_max = flush_max_records
        self._writer: BatchWriter | None = None
        self._create, self._append, self._finish = bulk_kinds(self._channel)
        self._listener: _Listener | None = None
        self._waker: Waker | None = None

    # -- opening ---------------------------------------------------------------------------

    def _connect(self, role: str = "writer") -> Conn:
        return connect(self._conninfo, self.schema, role)

    async def open(self) -> None:
        try:
            conn = await anyio.to_thread.run_sync(self._open_sync)
        except psycopg.Error as exc:
            raise store_error(exc, self.location) from None
        self._writer = BatchWriter(conn, _PostgresDialect(self._connect), location=self.location,
                                   flush_interval=self._flush_interval,
                                   flush_max=self._flush_max, name="tether-postgres-writer")
        self._writer.start()
        self._pool = psycopg_pool.AsyncConnectionPool(
            self._conninfo, min_size=1, max_size=READ_CONNECTIONS, open=False,
            kwargs={"autocommit": True, "options": f"-c search_path={self.schema}",
                    "application_name": f"tether-reader:{self.schema}"},
            timeout=CONNECT_TIMEOUT_SECONDS, name=f"tether-{self.schema}")
        await self._pool.open()
        if self._waker is not None:
            self._start_listener()

    def _open_sync(self) -> Conn:
        conn = self._connect()
        try:
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: Conn) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            tables = {row[0] for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (self.schema,))}
            if tables and "tether_meta" not in tables:
                raise StoreCorrupt(
                    f"{self.location}: schema {self.schema!r} holds tables of something else "
                    f"({', '.join(sorted(tables))}); nothing was changed: choose another "
                    "schema with ?schema=NAME")
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            conn.execute("CREATE TABLE IF NOT EXISTS tether_meta "
                         "(key text PRIMARY KEY, value text NOT NULL)")
            row = conn.execute("SELECT value FROM tether_meta WHERE key = 'schema_version'"
                               ).fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(self.location, version, SCHEMA_VERSION)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                script = (resources.files("tether.store.migrations") / MIGRATIONS[target]
                          ).read_text(encoding="utf-8")
                conn.execute(script.encode())  # no parameters: several statements at once
                conn.execute("INSERT INTO tether_meta VALUES ('schema_version', %s) ON CONFLICT "
                             "(key) DO UPDATE SET value = excluded.value", (str(target),))

    async def aclose(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            listener.stopping.set()
            with contextlib.suppress(StoreError):  # wake it now rather than at its next timeout
                await self._read("SELECT pg_notify(%s, '')", (self._channel,))
            await anyio.to_thread.run_sync(listener.join)
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await anyio.to_thread.run_sync(writer.close)
            writer.conn.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def watch(self, wake: Waker) -> None:
        self._waker = wake
        if self._writer is not None and self._listener is None:
            self._start_listener()

    def _start_listener(self) -> None:
        assert self._waker is not None
        self._listener = _Listener(functools.partial(self._connect, "listener"), self._channel,
                                   asyncio.get_running_loop(), self._waker)
        self._listener.start()

    # -- plumbing --------------------------------------------------------------------------

    # -- runs ------------------------------------------------------------------------------

    async def create_run(self, new: NewRun, *, now_ms: int, owner: str | None,
                         lease_ms: int) -> Created:
        values, created = new_run_row(new, now_ms=now_ms, owner=owner, lease_ms=lease_ms)
        create_one = self._create.apply_many

        def apply(conn: Conn) -> Created:
            if create_one(conn, [values]):
                return created
            return Created(require_run(conn, new.run_id), None)
        return await self._write(apply, bulk=self._create, payload=values, result=created)

    async def claim_runs(self, *, owner: str, now_ms: int, lease_ms: int, limit: int,
                         owner_is_dead: OwnerIsDead, run_ids: list[str] | None = None,
                         ) -> list[Claim]:
        only = " AND run_id = ANY(%(ids)s)" if run_ids is not None else ""
        orphans = self._take_orphans()
        params: dict[str, Any] = {"now": now_ms, "limit": limit, "ids": run_ids, "owner": owner,
                                  "lease": now_ms + lease_ms, "orphans": orphans}
        claimable = (
            "((status = 'pending' AND (owner IS NULL OR lease_expires_at_ms < %(now)s)) "
            " OR (status = 'waiting' AND wake_at_ms <= %(now)s) "
            " OR (status = 'running' AND lease_expires_at_ms < %(now)s)"
            " OR (status = 'running' AND owner = %(owner)s AND run_id = ANY(%(orphans)s)))"
            + only)
        take = ("UPDATE runs r SET status = 'running', owner = %(owner)s, fence = r.fence + 1, "
                "lease_expires_at_ms = %(lease)s, wake_at_ms = NULL, updated_at_ms = %(now)s "
                "FROM picked WHERE r.run_id = picked.run_id RETURNING "
                + ", ".join(f"r.{column}" for column in RUN_COLUMNS.split(", ")) + ", r.fence")

        def apply(conn: Conn) -> list[Claim]:
            # SKIP LOCKED: rows another worker is claiming right now are left to it.
            rows = conn.execute(
                f"WITH picked AS (SELECT run_id FROM runs WHERE {claimable} "
                f"ORDER BY updated_at_ms LIMIT %(limit)s FOR UPDATE SKIP LOCKED) {take}",
                params).fetchall()
            if len(rows) < limit:
                # Runs of a worker on this host that died hold an unexpired lease; take them
                # now (expired ones were taken above).
                others = [row[0] for row in conn.execute(
                    "SELECT DISTINCT owner FROM runs WHERE owner IS NOT NULL AND owner != %s "
                    "AND status IN ('running', 'pending')", (owner,))]
                for dead in filter(owner_is_dead, others):
                    rows += conn.execute(
                        "WITH picked AS (SELECT run_id FROM runs WHERE owner = %(dead)s AND "
                        "status IN ('running', 'pending') AND lease_expires_at_ms >= %(now)s"
                        + only + " LIMIT %(left)s FOR UPDATE SKIP LOCKED) " + take,
                        {**params, "dead": dead, "left": limit - len(rows)}).fetchall()
            claims = [Claim(run_from_row(row), row[-1]) for row in rows[:limit]]
            log_claims(conn, [(claim.run.run_id, claim.fence, owner, now_ms) for claim in claims])
            return claims
        return await self._write_claim(apply, orphans)

    async def heartbeat(self, *, owner: str, run_ids: list[str], now_ms: int,
                        lease_ms: int) -> list[str]:
        def apply(conn: Conn) -> list[str]:
            held = conn.execute(
                "UPDATE runs SET lease_expires_at_ms = %s WHERE run_id = ANY(%s) AND owner = %s "
                "AND status = 'running' RETURNING run_id",
                (now_ms + lease_ms, run_ids, owner)).fetchall()
            return sorted(set(run_ids) - {row[0] for row in held})
        return await self._write(apply)

    async def release(self, *, owner: str) -> None:
        def apply(conn: Conn) -> None:
            if conn.execute("UPDATE runs SET owner = NULL, lease_expires_at_ms = 0 "
                            "WHERE owner = %s", (owner,)).rowcount:
                notify(conn, self._channel)  # another worker may take them at once
        await self._write(apply)

    async def finish_run(self, run_id: str, fence: int, *, status: RunStatus,
                         result: str | None, error: str | None, now_ms: int) -> None:
        finish: Finish = (run_id, fence, str(status), result, error, now_ms)

        def apply(conn: Conn) -> None:
            settled = finish_runs(conn, [finish])
            if not settled:
                raise LeaseLost(run_id)
            notify_parents(conn, self._channel, settled, [finish])
        await self._write(apply, (run_id, fence), bulk=self._finish, payload=finish)

    async def suspend_run(self, run_id: str, fence: int, *, wake_at_ms: int | None,
                          waiting_for: str | None, now_ms: int) -> bool:
        def apply(conn: Conn) -> bool:
            check_fence(conn, run_id, fence)
            if waiting_for is not None and conn.execute(
                    "SELECT 1 FROM signals WHERE run_id = %s AND name = %s AND consumed_seq "
                    "IS NULL LIMIT 1", (run_id, waiting_for)).fetchone():
                return False
            conn.execute(
                "UPDATE runs SET status = 'waiting', owner = NULL, lease_expires_at_ms = 0, "
                "wake_at_ms = %s, waiting_for = %s, updated_at_ms = %s, fence = fence + 1 "
                "WHERE run_id = %s", (wake_at_ms, waiting_for, now_ms, run_id))
            if wake_at_ms is not None:  # every worker learns the timer, not just this one
                notify(conn, self._channel, str(wake_at_ms))
            return True
        return await self._write(apply, (run_id, fence))

    async def cancel_run(self, run_id: str, *, reason: JSONObject, now_ms: int) -> Run:
        def apply(conn: Conn) -> Run:
            run = require_run(conn, run_id, lock=True)
            if not run.status.is_terminal:
                settle(conn, self._channel, run, RunStatus.CANCELLED, None, json.dumps(reason),
                       now_ms)
            return require_run(conn, run_id)
        return await self._write(apply)

    async def resolve_run(self, run_id: str, *, action: str, value: str | None,
                          now_ms: int) -> Run:
        def apply(conn: Conn) -> Run:
            run = require_run(conn, run_id, lock=True)
            row = conn.execute(f"SELECT {RECORD_COLUMNS} FROM journal WHERE run_id = %s AND "
                               "state = 'started' AND kind = 'tool' ORDER BY seq LIMIT 1",
                               (run_id,)).fetchone()
            uncertain = None if row is None else Record(*row)
            check_resolvable(run, action, uncertain)
            if action == "fail":
                settle(conn, self._channel, run, RunStatus.FAILED, None, failed_by_operator(run),
                       now_ms)
            else:
                if uncertain is not None:
                    record = resolved_record(uncertain, action, value, now_ms)
                    conn.execute("UPDATE journal SET state = %s, value_json = %s, "
                                 "finished_at_ms = %s, detail_json = %s WHERE run_id = %s AND "
                                 "seq = %s", (record.state, record.value, record.finished_at_ms,
                                              record.detail, run_id, record.seq))
                conn.execute("UPDATE runs SET status = 'pending', error_json = NULL, "
                             "updated_at_ms = %s WHERE run_id = %s", (now_ms, run_id))
                notify(conn, self._channel)
            return require_run(conn, run_id)
        return await self._write(apply)

    async def get_run(self, run_id: str) -> Run | None:
        rows = await self._read(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s", (run_id,))
        return run_from_row(rows[0]) if rows else None

    async def list_runs(self, *, status: RunStatus | None = None, limit: int = 100,
                        agent: str | None = None, tenant: str | None = None,
                        before: tuple[int, str] | None = None) -> list[Run]:
        where, params = runs_filter("%s", status=status, agent=agent, tenant=tenant,
                                    before=before)
        rows = await self._read(f"SELECT {RUN_COLUMNS} FROM runs {where} "
                                "ORDER BY created_at_ms DESC, run_id DESC LIMIT %s",
                                (*params, limit))
        return [run_from_row(row) for row in rows]

    async def next_wake_ms(self) -> int | None:
        rows = await self._read("SELECT min(wake_at_ms) FROM runs WHERE status = 'waiting'")
        return rows[0][0] if rows else None

    async def count_runnable(self, *, now_ms: int) -> int:
        rows = await self._read(
            "SELECT count(*) FROM runs WHERE status IN ('pending', 'running') "
            "OR (status = 'waiting' AND wake_at_ms <= %s)", (now_ms,))
        return int(rows[0][0])

    # -- journal ---------------------------------------------------------------------------

    def append(self, run_id: str, fence: int, records: list[Record], commit: Commit,
               ) -> Awaitable[None] | None:
        item: Append = (run_id, fence, [(*record_row(run_id, r), fence) for r in records])
        return self._submit(lambda conn: append(conn, item), commit, (run_id, fence),
                            bulk=self._append, payload=item)

    async def load_journal(self, run_id: str) -> list[Record]:
        rows = await self._read(
            f"SELECT {RECORD_COLUMNS} FROM journal WHERE run_id = %s ORDER BY seq", (run_id,))
        return [Record(*row) for row in rows]

    async def load_thread(self, thread_id: str) -> list[JSONObject]:
        rows = await self._read(
            "SELECT j.value_json FROM journal j JOIN runs r ON r.run_id = j.run_id "
            "WHERE r.thread_id = %s AND r.status = 'completed' AND j.kind = 'thread' "
            "AND j.state = 'ok' ORDER BY r.finished_at_ms, r.run_id, j.seq", (thread_id,))
        return [message for (value,) in rows for message in json.loads(value)]

    # -- signals ---------------------------------------------------------------------------

    async def send_signal(self, run_id: str, name: str, data: str | None, *, now_ms: int) -> Run:
        def apply(conn: Conn) -> Run:
            refuse_signal_if_ended(require_run(conn, run_id, lock=True))
            deliver(conn, self._channel, run_id, name, data, now_ms)
            return require_run(conn, run_id)
        return await self._write(apply)

    async def take_signal(self, run_id: str, fence: int, name: str, record: Record,
                          ) -> str | Missing:
        def apply(conn: Conn) -> str | Missing:
            check_fence(conn, run_id, fence)
            row = conn.execute("SELECT signal_id, data_json FROM signals WHERE run_id = %s AND "
                               "name = %s AND consumed_seq IS NULL ORDER BY signal_id LIMIT 1 "
                               "FOR UPDATE", (run_id, name)).fetchone()
            if row is None:
                return MISSING
            conn.execute("UPDATE signals SET consumed_seq = %s WHERE signal_id = %s",
                         (record.seq, row[0]))
            record.state, record.value = RecordState.OK, row[1] if row[1] is not None else "null"
            upsert_rows(conn, run_id, [(*record_row(run_id, record), fence)])
            return record.value
        return await self._write(apply, (run_id, fence))

    # -- for operators and tests -----------------------------------------------------------

    async def claims(self, run_id: str) -> list[tuple[int, str, int]]:
        """The claims of a run, oldest first: (fence, owner, claimed_at_ms)."""
        rows = await self._read("SELECT fence, owner, claimed_at_ms FROM claims WHERE run_id = %s "
                                "ORDER BY fence", (run_id,))
        return [(row[0], row[1], row[2]) for row in rows]

    async def record_fences(self, run_id: str) -> list[tuple[int, int]]:
        """(seq, fence) of each journal record: the claim each was written under."""
        rows = await self._read("SELECT seq, fence FROM journal WHERE run_id = %s ORDER BY seq",
                                (run_id,))
        return [(row[0], row[1]) for row in rows]


class _Listener:
    """A thread that LISTENs on the store's channel and wakes the runtime's dispatcher.

    A thread with its own connection, like the writer: notifications arrive while the event
    loop is busy, and a lost connection is re-established with backoff without touching it.
    """

    def __init__(self, connect: Callable[[], Conn], channel: str,
                 loop: asyncio.AbstractEventLoop, wake: Waker) -> None:
        self._connect, self._channel, self._loop, self._wake = connect, channel, loop, wake
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name="tether-postgres-listener",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        """Wait for the thread to end, once ``stopping`` is set."""
        self._thread.join()

    def _main(self) -> None:
        delay = 0.1
        while not self.stopping.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {self._channel}")
                    self._deliver(None)  # anything sent while we were not listening
                    delay = 0.1
                    while not self.stopping.is_set():
                        for note in conn.notifies(timeout=0.25, stop_after=1):
                            self._deliver(int(note.payload) if note.payload else None)
            except psycopg.Error:
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0)

    def _deliver(self, at_ms: int | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to wake
            self._loop.call_soon_threadsafe(self._wake, at_ms)
