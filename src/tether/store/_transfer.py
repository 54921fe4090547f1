"""``tether migrate``: move everything from an SQLite file to a PostgreSQL schema.

Runs (whatever their status), journals, undelivered and delivered signals, and the governance
tables (audit chains, approvals, budget ledgers) are copied in one PostgreSQL transaction: the target gets all
of it or none of it, and the source file is only read. Runs that were running are released
(no owner, lease lapsed) so the first worker on PostgreSQL resumes them by replay; waiting runs
keep their timers and the signals they wait for. Afterwards every copied table is read back
from both sides and compared row by row (a digest per table), audit chains included, so their
hashes still verify.

The source must be at rest: a run whose lease is still held by a live worker makes the
migration refuse (stop the workers first), because that worker would go on writing to the
file after its runs had moved.
"""

from __future__ import annotations

import functools
import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from tether.errors import SchemaTooNew, StoreCorrupt, UsageError
from tether.store._postgres import PostgresStore, connect, split_url
from tether.store._protocol import OwnerIsDead
from tether.store._sqlite import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION

PAGE = 5_000


@dataclass(frozen=True, slots=True)
class _Table:
    """How one table moves: what to read from SQLite (in key order) and where it goes."""

    name: str
    select: str  # SQLite query yielding rows in the order of ``columns``
    columns: str  # target columns
    compare: str  # the same rows, as they should read on the target, in the same order


_RUN_COLUMNS = ("run_id, agent, agent_version, agent_ref, input_json, status, result_json, "
                "error_json, thread_id, parent_run_id, tenant, principal, owner, fence, "
                "lease_expires_at_ms, wake_at_ms, waiting_for, created_at_ms, updated_at_ms, "
                "finished_at_ms")
_RECORD_COLUMNS = ("run_id, seq, kind, name, digest, state, value_json, attempts, "
                   "started_at_ms, finished_at_ms, detail_json")
_SIGNAL_COLUMNS = "run_id, name, data_json, sent_at_ms, consumed_seq"
_APPROVAL_COLUMNS = ("approval_id, run_id, seq, tenant, principal, agent, tool, args_json, "
                     "message_json, policies_json, status, requested_at_ms, expires_at_ms, "
                     "decided_by, reason, decided_at_ms")
# Released on the way: a run that was running has no owner and a lapsed lease afterwards.
_RELEASED = _RUN_COLUMNS.replace("owner, fence, lease_expires_at_ms",
                                 "NULL, fence, 0")

TABLES = (
    _Table("runs", f"SELECT {_RELEASED} FROM runs ORDER BY run_id", _RUN_COLUMNS,
           f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ANY(%s) ORDER BY run_id"),
    # Each record keeps the fence of its run: written under the run's last claim as far as
    # the new cluster knows (the file kept no per-record fence).
    _Table("journal", "SELECT " + ", ".join(f"j.{c}" for c in _RECORD_COLUMNS.split(", "))
           + ", r.fence FROM journal j JOIN runs r ON r.run_id = j.run_id "
           "ORDER BY j.run_id, j.seq", _RECORD_COLUMNS + ", fence",
           f"SELECT {_RECORD_COLUMNS}, fence FROM journal WHERE run_id = ANY(%s) "
           "ORDER BY run_id, seq"),
    # Signals get new ids on the target; copied in id order, they keep their order.
    _Table("signals", f"SELECT {_SIGNAL_COLUMNS} FROM signals ORDER BY signal_id",
           _SIGNAL_COLUMNS, f"SELECT {_SIGNAL_COLUMNS} FROM signals WHERE run_id = ANY(%s) "
           "ORDER BY signal_id"),
    _Table("audit", "SELECT tenant, idx, body, hash FROM audit ORDER BY tenant, idx",
           "tenant, idx, body, hash", "SELECT tenant, idx, body, hash FROM audit "
           "WHERE tenant = ANY(%s) ORDER BY tenant, idx"),
    _Table("approvals", f"SELECT {_APPROVAL_COLUMNS} FROM approvals ORDER BY approval_id",
           _APPROVAL_COLUMNS, f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE "
           "run_id = ANY(%s) ORDER BY approval_id"),
    # Budgets: what was spent stays spent. (Rate-limit state is not moved: it describes the
    # last minute or so, and a limit starts afresh on the new store.)
    _Table("ledger", "SELECT scope, balance, updated_at_ms FROM ledger ORDER BY scope",
           "scope, balance, updated_at_ms", "SELECT scope, balance, updated_at_ms FROM ledger "
           "WHERE scope = ANY(%s) ORDER BY scope"),
    _Table("ledger_posts", "SELECT post_id, entries_json, at_ms FROM ledger_posts "
           "ORDER BY post_id", "post_id, entries_json, at_ms", "SELECT post_id, entries_json, "
           "at_ms FROM ledger_posts WHERE post_id = ANY(%s) ORDER BY post_id"),
)
# What each table's read-back is limited to (the source's keys of it).
_KEYS = {"audit": "SELECT DISTINCT tenant FROM audit ORDER BY tenant",
         "ledger": "SELECT scope FROM ledger ORDER BY scope",
         "ledger_posts": "SELECT post_id FROM ledger_posts ORDER BY post_id"}


@dataclass(slots=True)
class MigrationReport:
    """What moved, table by table, and whether it read back the same."""

    runs_by_status: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    verified: bool = False


def _open_source(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    # Without a -wal beside it the file is whole: read it as immutable, because a read-only
    # connection to a WAL-mode file creates -wal and -shm files next to it.
    whole = not Path(f"{path}-wal").exists()
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + ("?mode=ro&immutable=1" if whole
                                                           else "?mode=ro"), uri=True)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise StoreCorrupt(f"{path} is not a Tether database or is damaged ({exc})") from None
    if "runs" not in tables:
        conn.close()
        raise StoreCorrupt(f"{path} is not a Tether database (no runs table)")
    if version > SQLITE_SCHEMA_VERSION:
        conn.close()
        raise SchemaTooNew(str(path), version, SQLITE_SCHEMA_VERSION)
    if version < SQLITE_SCHEMA_VERSION:
        conn.close()
        raise UsageError(f"{path} has schema {version}; open it once with this Tether "
                         f"(e.g. `tether --db sqlite:///{path} runs ls`) to upgrade it, "
                         "then migrate")
    return conn


def _pages(conn: sqlite3.Connection, sql: str) -> Iterator[list[tuple[Any, ...]]]:
    cursor = conn.execute(sql)
    while rows := cursor.fetchmany(PAGE):
        yield rows


def _digest(rows: Iterator[list[tuple[Any, ...]]] | list[tuple[Any, ...]]) -> tuple[int, str]:
    """(count, sha256) of rows, pages or a list; values compared as their text form."""
    digest, count = hashlib.sha256(), 0
    pages = [rows] if isinstance(rows, list) else rows
    for page in pages:
        for row in page:
            digest.update(repr(tuple(None if v is None else str(v) for v in row)).encode())
            count += 1
    return count, digest.hexdigest()


async def migrate_sqlite_to_postgres(source: Path, target_url: str, *, now_ms: int,
                                     owner_is_dead: OwnerIsDead, force: bool = False,
                                     ) -> MigrationReport:
    """Copy an SQLite store into a PostgreSQL one.

    Raises:
        UsageError: live workers still hold runs of the source (without ``force``; a worker
            known to be dead holds nothing), or the target already has some of its runs or
            audit chains.
    """
    await anyio.to_thread.run_sync(functools.partial(_check_source, source, now_ms,
                                                     owner_is_dead, force))
    target = PostgresStore(target_url)  # creates or upgrades the schema, as a worker would
    await target.open()
    await target.aclose()
    return await anyio.to_thread.run_sync(_copy, source, target_url)


def _check_source(source: Path, now_ms: int, owner_is_dead: OwnerIsDead, force: bool) -> None:
    src = _open_source(source)
    try:
        held = [(run_id, owner) for run_id, owner in src.execute(
            "SELECT run_id, owner FROM runs WHERE owner IS NOT NULL AND status IN "
            "('running', 'pending') AND lease_expires_at_ms >= ?", (now_ms,))
            if not owner_is_dead(owner)]
    finally:
        src.close()
    if held and not force:
        raise UsageError(
            f"{source}: runs are held by live workers ({', '.join(r[0] for r in held)} by "
            f"{held[0][1]}...); stop the workers using this file, then migrate (--force moves "
            "them anyway, and those workers must then not be started again)")


def _copy(source: Path, target_url: str) -> MigrationReport:
    src = _open_source(source)
    try:
        run_ids = [row[0] for row in src.execute("SELECT run_id FROM runs ORDER BY run_id")]
        keys = {table: [row[0] for row in src.execute(sql)] for table, sql in _KEYS.items()}
        report = MigrationReport(runs_by_status=dict(src.execute(
            "SELECT status, count(*) FROM runs GROUP BY status ORDER BY status").fetchall()))
        conninfo, schema, location = split_url(target_url)
        with connect(conninfo, schema, "migrate") as dst:
            with dst.transaction():
                _refuse_conflicts(dst, location, run_ids, keys["audit"], keys["ledger"])
                for table in TABLES:
                    with dst.cursor().copy(
                            f"COPY {table.name} ({table.columns}) FROM STDIN") as copy:
                        for page in _pages(src, table.select):
                            for row in page:
                                copy.write_row(row)
                dst.execute("SELECT pg_notify(%s, '')", (f"tether_{schema}",))  # wake workers
            for table in TABLES:
                expected = _digest(_pages(src, table.select))
                actual = _digest(dst.execute(table.compare,
                                             (keys.get(table.name, run_ids),)).fetchall())
                report.rows[table.name] = actual[0]
                if expected != actual:
                    raise StoreCorrupt(f"{location}: table {table.name} did not read back as "
                                       f"copied ({expected[0]} rows sent, {actual[0]} read); "
                                       "the source file is unchanged")
        report.verified = True
        return report
    finally:
        src.close()


def _refuse_conflicts(dst: Any, location: str, run_ids: list[str], tenants: list[str],
                      scopes: list[str]) -> None:
    clash = [row[0] for row in dst.execute(
        "SELECT run_id FROM runs WHERE run_id = ANY(%s) ORDER BY run_id LIMIT 5", (run_ids,))]
    if clash:
        raise UsageError(f"{location} already has runs with the same ids ({', '.join(clash)}"
                         "...): was this file migrated before? Nothing was copied")
    chains = [row[0] for row in dst.execute(
        "SELECT DISTINCT tenant FROM audit WHERE tenant = ANY(%s) LIMIT 5", (tenants,))]
    if chains:
        raise UsageError(f"{location} already has audit chains for tenants "
                         f"{', '.join(chains)}; an audit chain cannot be merged. Nothing was "
                         "copied")
    budgets = [row[0] for row in dst.execute(
        "SELECT scope FROM ledger WHERE scope = ANY(%s) ORDER BY scope LIMIT 5", (scopes,))]
    if budgets:
        raise UsageError(f"{location} already keeps budgets {', '.join(budgets)}; spending "
                         "cannot be merged. Nothing was copied")
