"""``SQLiteStore``: the embedded default. One file, WAL, one writer thread with group commit.

Reads run on worker threads over their own read-only connections (``_sqlite_reads.py``).
Writes go through the ``BatchWriter`` (``_writer.py``: the batching rules).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import anyio

from tether.config import Durability
from tether.errors import SchemaTooNew, StoreCorrupt, StoreError
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
from tether.store._sqlite_governance import SQLiteGovernance
from tether.store._sqlite_ledger import SQLiteLedger
from tether.store._sqlite_reads import store_error
from tether.store._sqlite_sql import (
    APPEND,
    CREATE,
    FINISH,
    Append,
    Finish,
    append,
    check_fence,
    deliver,
    finish_run,
    insert_run,
    require_run,
    select_run,
    settle,
    upsert_rows,
)
from tether.store._writer import BatchWriter
from tether.types import JSONObject, Run, RunStatus

T = TypeVar("T")

SCHEMA_VERSION = 3
MIGRATIONS = {1: "sqlite_0001_init.sql", 2: "sqlite_0002_governance.sql",
              3: "sqlite_0003_limits.sql"}


class _SQLiteDialect:
    driver_error: ClassVar[type[Exception]] = sqlite3.Error
    begin: ClassVar[str] = "BEGIN IMMEDIATE"  # take the write lock now, not at the first write

    def in_transaction(self, conn: sqlite3.Connection) -> bool:
        return conn.in_transaction

    def store_error(self, exc: Exception, location: str) -> StoreError:
        return store_error(exc, location)

    def recover(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        return conn  # a file connection does not break; the next batch tries again


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (``executescript`` would commit early)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        if not current and (not line.strip() or line.lstrip().startswith("--")):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current)
            current = ""
    return statements


class SQLiteStore(SQLiteGovernance, SQLiteLedger):
    """The embedded store: a single SQLite file in WAL mode."""

    def __init__(self, path: str | Path, *, durability: Durability = "power",
                 flush_interval_ms: int = 20, flush_max_records: int = 1024) -> None:
        super().__init__()
        self.path = Path(path)
        self.location = str(self.path)
        self._durability = durability
        self._flush_interval = flush_interval_ms / 1000
        self._flush_max = flush_max_records
        self._writer: BatchWriter | None = None

    # -- opening ---------------------------------------------------------------------------

    async def open(self) -> None:
        conn = await anyio.to_thread.run_sync(self._open_sync)
        self._writer = BatchWriter(conn, _SQLiteDialect(), location=self.location,
                                   flush_interval=self._flush_interval, flush_max=self._flush_max,
                                   name="tether-sqlite-writer")
        self._writer.start()

    def _open_sync(self) -> sqlite3.Connection:
        # Check an existing file read-only first: a file from a newer Tether or a damaged one
        # must be refused untouched (switching to WAL alone would rewrite its header).
        if self.path.exists() and self.path.stat().st_size > 0:
            self._inspect_existing()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")  # wait out another process's writer
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = " + ("FULL" if self._durability == "power"
                                                    else "NORMAL"))
            self._migrate(conn)
        except sqlite3.Error as exc:
            raise store_error(exc, self.location) from None
        return conn

    def _inspect_existing(self) -> None:
        # Without a -wal beside it the file is whole: read it as immutable, because a plain
        # read-only look at a WAL-mode file creates -wal and -shm files next to it.
        whole = not Path(f"{self.path}-wal").exists()
        uri = self.path.resolve().as_uri() + ("?mode=ro&immutable=1" if whole else "?mode=ro")
        try:
            conn = sqlite3.connect(uri, uri=True)
        except sqlite3.Error as exc:
            raise store_error(exc, self.location) from None
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(
                f"{self.location} is not a Tether database or is damaged ({exc}); the file was "
                "not modified: restore it from a backup, or point --db at another file") from None
        finally:
            conn.close()
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(self.location, version, SCHEMA_VERSION)
        if tables and "runs" not in tables:
            raise StoreCorrupt(f"{self.location} is an SQLite database of something else (tables: "
                               f"{', '.join(sorted(tables))}); the file was not modified")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(self.location, version, SCHEMA_VERSION)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                script = (resources.files("tether.store.migrations") / MIGRATIONS[target]
                          ).read_text(encoding="utf-8")
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def watch(self, wake: Waker) -> None:
        pass  # nothing tells another process's writes apart: workers poll

    async def aclose(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await anyio.to_thread.run_sync(writer.close)
            writer.conn.close()
        self._close_readers()

    # -- runs ------------------------------------------------------------------------------

    async def create_run(self, new: NewRun, *, now_ms: int, owner: str | None,
                         lease_ms: int) -> Created:
        values, created = new_run_row(new, now_ms=now_ms, owner=owner, lease_ms=lease_ms)

        def apply(conn: sqlite3.Connection) -> Created:
            if insert_run(conn, values):
                return created
            return Created(require_run(conn, new.run_id), None)
        return await self._write(apply, atomic=True, bulk=CREATE, payload=values,
                                 result=created)

    async def claim_runs(self, *, owner: str, now_ms: int, lease_ms: int, limit: int,
                         owner_is_dead: OwnerIsDead, run_ids: list[str] | None = None,
                         ) -> list[Claim]:
        orphans = self._take_orphans()

        def apply(conn: sqlite3.Connection) -> list[Claim]:
            claimable = (
                "((status = 'pending' AND (owner IS NULL OR lease_expires_at_ms < :now)) "
                " OR (status = 'waiting' AND wake_at_ms <= :now) "
                " OR (status = 'running' AND lease_expires_at_ms < :now)"
                " OR (status = 'running' AND owner = :owner AND run_id IN "
                "     (SELECT value FROM json_each(:orphans))))")
            params: dict[str, Any] = {"now": now_ms, "limit": limit, "owner": owner,
                                      "orphans": json.dumps(orphans)}
            if run_ids is not None:
                marks = ",".join(f":id{i}" for i in range(len(run_ids)))
                params.update({f"id{i}": run_id for i, run_id in enumerate(run_ids)})
                where = f"run_id IN ({marks}) AND {claimable}"
            else:
                where = claimable
            rows = conn.execute(f"SELECT run_id, fence FROM runs WHERE {where} "
                                "ORDER BY updated_at_ms LIMIT :limit", params).fetchall()
            if len(rows) < limit:
                # Runs of a worker on this host that died hold an unexpired lease; take them now
                # (expired ones were selected above; ``run_ids`` limits these as well).
                others = [row[0] for row in conn.execute(
                    "SELECT DISTINCT owner FROM runs WHERE owner IS NOT NULL AND owner != ? "
                    "AND status IN ('running', 'pending')", (owner,))]
                only = f" AND run_id IN ({marks})" if run_ids is not None else ""
                for dead in filter(owner_is_dead, others):
                    rows += conn.execute(
                        "SELECT run_id, fence FROM runs WHERE owner = :dead AND status IN "
                        "('running', 'pending') AND lease_expires_at_ms >= :now" + only
                        + " LIMIT :left", {**params, "dead": dead, "left": limit - len(rows)},
                    ).fetchall()
            claims = []
            for run_id, fence in rows[:limit]:
                changed = conn.execute(
                    "UPDATE runs SET status = 'running', owner = ?, fence = fence + 1, "
                    "lease_expires_at_ms = ?, wake_at_ms = NULL, updated_at_ms = ? "
                    "WHERE run_id = ? AND fence = ?",
                    (owner, now_ms + lease_ms, now_ms, run_id, fence)).rowcount
                if changed:
                    claims.append(Claim(require_run(conn, run_id), fence + 1))
            return claims
        return await self._write_claim(apply, orphans)

    async def heartbeat(self, *, owner: str, run_ids: list[str], now_ms: int,
                        lease_ms: int) -> list[str]:
        ids = json.dumps(run_ids)

        def apply(conn: sqlite3.Connection) -> list[str]:
            # Looked up by id ('+' keeps the planner off the owner and status indexes), and
            # the answer as one row: a worker with 10,000 runs must not step 10,000 rows.
            held = ("run_id IN (SELECT value FROM json_each(?)) AND +owner = ? "
                    "AND +status = 'running'")
            before = conn.total_changes
            conn.execute(f"UPDATE runs SET lease_expires_at_ms = ? WHERE {held}",
                         (now_ms + lease_ms, ids, owner))
            if conn.total_changes - before == len(run_ids):
                return []
            (still,) = conn.execute(f"SELECT json_group_array(run_id) FROM runs WHERE {held}",
                                    (ids, owner)).fetchone()
            return sorted(set(run_ids) - set(json.loads(still)))
        return await self._write(apply)

    async def release(self, *, owner: str) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE runs SET owner = NULL, lease_expires_at_ms = 0 WHERE owner = ?",
                         (owner,))
        await self._write(apply)

    async def finish_run(self, run_id: str, fence: int, *, status: RunStatus,
                         result: str | None, error: str | None, now_ms: int) -> None:
        finish: Finish = (run_id, fence, str(status), result, error, now_ms)
        await self._write(lambda conn: finish_run(conn, finish), (run_id, fence), atomic=True,
                          bulk=FINISH, payload=finish)

    async def suspend_run(self, run_id: str, fence: int, *, wake_at_ms: int | None,
                          waiting_for: str | None, now_ms: int) -> bool:
        def apply(conn: sqlite3.Connection) -> bool:
            check_fence(conn, run_id, fence)
            if waiting_for is not None and conn.execute(
                    "SELECT 1 FROM signals WHERE run_id = ? AND name = ? AND consumed_seq IS NULL",
                    (run_id, waiting_for)).fetchone():
                return False
            conn.execute(
                "UPDATE runs SET status = 'waiting', owner = NULL, lease_expires_at_ms = 0, "
                "wake_at_ms = ?, waiting_for = ?, updated_at_ms = ?, fence = fence + 1 "
                "WHERE run_id = ?", (wake_at_ms, waiting_for, now_ms, run_id))
            return True
        return await self._write(apply, (run_id, fence))

    async def cancel_run(self, run_id: str, *, reason: JSONObject, now_ms: int) -> Run:
        def apply(conn: sqlite3.Connection) -> Run:
            run = require_run(conn, run_id)
            if not run.status.is_terminal:
                settle(conn, run, RunStatus.CANCELLED, None, json.dumps(reason), now_ms)
            return require_run(conn, run_id)
        return await self._write(apply)

    async def resolve_run(self, run_id: str, *, action: str, value: str | None,
                          now_ms: int) -> Run:
        def apply(conn: sqlite3.Connection) -> Run:
            run = require_run(conn, run_id)
            row = conn.execute(f"SELECT {RECORD_COLUMNS} FROM journal WHERE run_id = ? AND "
                               "state = 'started' AND kind = 'tool' ORDER BY seq LIMIT 1",
                               (run_id,)).fetchone()
            uncertain = None if row is None else Record(*row)
            check_resolvable(run, action, uncertain)
            if action == "fail":
                settle(conn, run, RunStatus.FAILED, None, failed_by_operator(run), now_ms)
            else:
                if uncertain is not None:
                    record = resolved_record(uncertain, action, value, now_ms)
                    conn.execute("UPDATE journal SET state = ?, value_json = ?, finished_at_ms = ?,"
                                 " detail_json = ? WHERE run_id = ? AND seq = ?",
                                 (record.state, record.value, record.finished_at_ms, record.detail,
                                  run_id, record.seq))
                conn.execute("UPDATE runs SET status = 'pending', error_json = NULL, "
                             "updated_at_ms = ? WHERE run_id = ?", (now_ms, run_id))
            return require_run(conn, run_id)
        return await self._write(apply)

    async def get_run(self, run_id: str) -> Run | None:
        return await self._read(lambda conn: select_run(conn, run_id))

    async def list_runs(self, *, status: RunStatus | None = None, limit: int = 100,
                        agent: str | None = None, tenant: str | None = None,
                        before: tuple[int, str] | None = None) -> list[Run]:
        where, params = runs_filter("?", status=status, agent=agent, tenant=tenant,
                                    before=before)
        sql = (f"SELECT {RUN_COLUMNS} FROM runs {where} "
               "ORDER BY created_at_ms DESC, run_id DESC LIMIT ?")
        rows = await self._read(lambda conn: conn.execute(sql, (*params, limit)).fetchall())
        return [run_from_row(row) for row in rows]

    async def next_wake_ms(self) -> int | None:
        row = await self._read(lambda conn: conn.execute(
            "SELECT min(wake_at_ms) FROM runs WHERE status = 'waiting'").fetchone())
        return None if row is None else row[0]

    async def count_runnable(self, *, now_ms: int) -> int:
        row = await self._read(lambda conn: conn.execute(
            "SELECT count(*) FROM runs WHERE status IN ('pending', 'running') "
            "OR (status = 'waiting' AND wake_at_ms <= ?)", (now_ms,)).fetchone())
        return int(row[0])

    # -- journal ---------------------------------------------------------------------------

    def append(self, run_id: str, fence: int, records: list[Record], commit: Commit,
               ) -> Awaitable[None] | None:
        item: Append = (run_id, fence, [record_row(run_id, r) for r in records])
        return self._submit(lambda conn: append(conn, item), commit, (run_id, fence),
                            bulk=APPEND, payload=item)

    async def load_journal(self, run_id: str) -> list[Record]:
        rows = await self._read(lambda conn: conn.execute(
            f"SELECT {RECORD_COLUMNS} FROM journal WHERE run_id = ? ORDER BY seq",
            (run_id,)).fetchall())
        return [Record(*row) for row in rows]

    async def load_thread(self, thread_id: str) -> list[JSONObject]:
        rows = await self._read(lambda conn: conn.execute(
            "SELECT j.value_json FROM journal j JOIN runs r ON r.run_id = j.run_id "
            "WHERE r.thread_id = ? AND r.status = 'completed' AND j.kind = 'thread' "
            "AND j.state = 'ok' ORDER BY r.finished_at_ms, r.run_id, j.seq",
            (thread_id,)).fetchall())
        return [message for (value,) in rows for message in json.loads(value)]

    # -- signals ---------------------------------------------------------------------------

    async def send_signal(self, run_id: str, name: str, data: str | None, *, now_ms: int) -> Run:
        def apply(conn: sqlite3.Connection) -> Run:
            refuse_signal_if_ended(require_run(conn, run_id))
            deliver(conn, run_id, name, data, now_ms)
            return require_run(conn, run_id)
        return await self._write(apply)

    async def take_signal(self, run_id: str, fence: int, name: str, record: Record,
                          ) -> str | Missing:
        def apply(conn: sqlite3.Connection) -> str | Missing:
            check_fence(conn, run_id, fence)
            row = conn.execute("SELECT signal_id, data_json FROM signals WHERE run_id = ? AND "
                               "name = ? AND consumed_seq IS NULL ORDER BY signal_id LIMIT 1",
                               (run_id, name)).fetchone()
            if row is None:
                return MISSING
            conn.execute("UPDATE signals SET consumed_seq = ? WHERE signal_id = ?",
                         (record.seq, row[0]))
            record.state, record.value = RecordState.OK, row[1] if row[1] is not None else "null"
            upsert_rows(conn, run_id, [record_row(run_id, record)])
            return record.value
        return await self._write(apply, (run_id, fence))
