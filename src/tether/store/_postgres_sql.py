"""The statements the PostgreSQL store runs on the writer's connection, one operation at a
time and in bulk. The bulk forms pass one array per column and let the server zip them with
``unnest``, so a batch of thousands of operations is a handful of round trips (see ``_writer``).

Fencing under concurrency: a write checks its run's fence with ``FOR SHARE``, which holds the
row until the batch commits. A claim by another worker (an ``UPDATE`` of the fence) therefore
waits for that commit, or has already committed and the check sees the new fence: a write
under a stale fence can never commit after the run was taken over.
"""

from __future__ import annotations

from typing import Any

import psycopg

from tether.errors import LeaseLost, RunNotFound, StoreError
from tether.store._common import (
    INSERT_RUN_COLUMNS,
    RECORD_COLUMNS,
    RUN_COLUMNS,
    child_signal,
    run_from_row,
)
from tether.store._writer import Bulk
from tether.types import Run, RunStatus

Conn = psycopg.Connection[tuple[Any, ...]]

_RUN_TYPES = ("text", "text", "text", "text", "text", "text", "text", "text", "text", "text",
              "text", "bigint", "bigint", "bigint", "bigint")
_RECORD_TYPES = ("text", "integer", "text", "text", "text", "text", "text", "integer", "bigint",
                 "bigint", "text", "bigint")
_UPSERT_RECORDS = (
    "INSERT INTO journal (run_id, " + RECORD_COLUMNS + ", fence) SELECT * FROM unnest("
    + ", ".join(f"%s::{kind}[]" for kind in _RECORD_TYPES) + ") "
    "ON CONFLICT (run_id, seq) DO UPDATE SET state = excluded.state, "
    "value_json = excluded.value_json, attempts = excluded.attempts, "
    "finished_at_ms = excluded.finished_at_ms, detail_json = excluded.detail_json, "
    "fence = excluded.fence WHERE journal.state = 'started'")

# Settling a run: its outcome, and it is released (no owner, no timer, a new fence).
_SETTLE = ("UPDATE runs SET status = %s, result_json = %s, error_json = %s, owner = NULL, "
           "lease_expires_at_ms = 0, wake_at_ms = NULL, waiting_for = NULL, updated_at_ms = %s, "
           "finished_at_ms = %s, fence = fence + 1 WHERE run_id = %s")


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to one list per column (what ``unnest`` takes)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


def notify(conn: Conn, channel: str, payload: str = "") -> None:
    """Wake the workers listening on ``channel`` once this transaction commits (the server
    folds identical notifications of one transaction into one)."""
    conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


# -- runs ------------------------------------------------------------------------------------

def select_run(conn: Conn, run_id: str) -> Run | None:
    row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s", (run_id,)).fetchone()
    return None if row is None else run_from_row(row)


def require_run(conn: Conn, run_id: str, *, lock: bool = False) -> Run:
    """A run, or ``RunNotFound``. With ``lock`` the row is held until the batch commits: an
    operator's change decided on what it read (cancel, resolve) cannot overwrite a worker's
    commit that lands in between."""
    row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s"
                       + (" FOR UPDATE" if lock else ""), (run_id,)).fetchone()
    if row is None:
        raise RunNotFound(run_id)
    return run_from_row(row)


def check_fence(conn: Conn, run_id: str, fence: int) -> None:
    row = conn.execute("SELECT fence, status FROM runs WHERE run_id = %s FOR SHARE",
                       (run_id,)).fetchone()
    if row is None or row[0] != fence or row[1] != "running":
        raise LeaseLost(run_id)


def insert_runs(conn: Conn, many: list[tuple[Any, ...]]) -> int:
    """Insert runs (``INSERT_RUN_COLUMNS`` order), skipping ids that exist; returns how many
    were inserted. The claims of those created with an owner are logged."""
    cur = conn.execute(
        f"INSERT INTO runs ({INSERT_RUN_COLUMNS}) SELECT * FROM unnest("
        + ", ".join(f"%s::{kind}[]" for kind in _RUN_TYPES) + ") "
        "ON CONFLICT (run_id) DO NOTHING RETURNING run_id, owner, fence, created_at_ms",
        _columns(many, len(_RUN_TYPES)))
    inserted = cur.fetchall()
    log_claims(conn, [(run_id, fence, owner, at) for run_id, owner, fence, at in inserted
                      if owner is not None])
    return len(inserted)


def log_claims(conn: Conn, claims: list[tuple[str, int, str, int]]) -> None:
    """Record (run, fence, owner, time) for each claim handed out."""
    if claims:
        conn.execute("INSERT INTO claims (run_id, fence, owner, claimed_at_ms) SELECT * FROM "
                     "unnest(%s::text[], %s::bigint[], %s::text[], %s::bigint[])",
                     _columns(claims, 4))


def _create_many(conn: Conn, many: list[tuple[Any, ...]]) -> bool:
    return insert_runs(conn, many) == len(many)  # else an id existed: one at a time


Finish = tuple[str, int, str, str | None, str | None, int]  # run, fence, status, result, error, now


def finish_runs(conn: Conn, many: list[Finish]) -> list[tuple[str, str | None]]:
    """Settle runs under their fences; returns (run, parent) for each one settled."""
    return conn.execute(
        "UPDATE runs SET status = f.status, result_json = f.result, error_json = f.error, "
        "owner = NULL, lease_expires_at_ms = 0, wake_at_ms = NULL, waiting_for = NULL, "
        "updated_at_ms = f.now, fence = runs.fence + 1, finished_at_ms = CASE WHEN f.status "
        "IN ('completed', 'failed', 'cancelled') THEN f.now END "
        "FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::bigint[])"
        " AS f(run_id, fence, status, result, error, now) "
        "WHERE runs.run_id = f.run_id AND runs.fence = f.fence AND runs.status = 'running' "
        "RETURNING runs.run_id, runs.parent_run_id", _columns(many, 6)).fetchall()


def notify_parents(conn: Conn, channel: str, settled: list[tuple[str, str | None]],
                   many: list[Finish]) -> None:
    by_run = {finish[0]: finish for finish in many}
    for run_id, parent in settled:
        if parent is not None:
            notify_parent(conn, channel, parent, by_run[run_id])


def notify_parent(conn: Conn, channel: str, parent_run_id: str, finish: Finish) -> None:
    run_id, _, status, result, error, now_ms = finish
    if RunStatus(status).is_terminal:
        name, data = child_signal(run_id, RunStatus(status), result, error)
        deliver(conn, channel, parent_run_id, name, data, now_ms)


def deliver(conn: Conn, channel: str, run_id: str, name: str, data: str | None,
            now_ms: int) -> None:
    """Store a signal; a run waiting for it becomes pending (and the workers are woken)."""
    conn.execute("INSERT INTO signals (run_id, name, data_json, sent_at_ms) "
                 "VALUES (%s, %s, %s, %s)", (run_id, name, data, now_ms))
    woken = conn.execute(
        "UPDATE runs SET status = 'pending', wake_at_ms = NULL, waiting_for = NULL, "
        "updated_at_ms = %s WHERE run_id = %s AND status = 'waiting' AND waiting_for = %s",
        (now_ms, run_id, name)).rowcount
    if woken:
        notify(conn, channel)


def settle(conn: Conn, channel: str, run: Run, status: RunStatus, result: str | None,
           error: str | None, now_ms: int) -> None:
    """Settle a run whatever its fence (operators: cancel, resolve --fail)."""
    conn.execute(_SETTLE, (str(status), result, error, now_ms,
                           now_ms if status.is_terminal else None, run.run_id))
    if run.parent_run_id is not None:
        notify_parent(conn, channel, run.parent_run_id,
                      (run.run_id, 0, str(status), result, error, now_ms))


# -- journal ---------------------------------------------------------------------------------

Append = tuple[str, int, list[tuple[Any, ...]]]  # run, fence, rows (record_row + fence)


def _last_per_record(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]] | None:
    """One row per (run, seq), the last one: PostgreSQL cannot change a row twice in one
    statement, and an append may carry an intent and its outcome together. None when a final
    row is followed by another for the same record (which must not change it)."""
    last: dict[tuple[str, int], tuple[Any, ...]] = {}
    for row in rows:
        key = (row[0], row[1])
        earlier = last.get(key)
        if earlier is not None and earlier[5] != "started" and earlier != row:
            return None
        last[key] = row
    return list(last.values())


def upsert_rows(conn: Conn, run_id: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert or move forward journal rows; a final record never changes."""
    distinct = _last_per_record(rows)
    if distinct is None or conn.execute(
            _UPSERT_RECORDS, _columns(distinct, len(_RECORD_TYPES))).rowcount != len(distinct):
        raise StoreError(f"run {run_id}: a journal record that is already final cannot change")


def append(conn: Conn, item: Append) -> None:
    run_id, fence, rows = item
    check_fence(conn, run_id, fence)
    upsert_rows(conn, run_id, rows)


# The bulk append checks fences and inserts in one statement (one round trip): rows whose run
# is not held under their fence are left out by the join, the row count then falls short, and
# the writer applies the group one operation at a time, so only the stale run fails.
_APPEND_HELD = (
    "WITH held AS (SELECT run_id, fence FROM runs WHERE run_id = ANY(%s) AND status = 'running' "
    "ORDER BY run_id FOR SHARE) "  # in id order: two batches lock alike, never crosswise
    "INSERT INTO journal (run_id, " + RECORD_COLUMNS + ", fence) SELECT u.* FROM unnest("
    + ", ".join(f"%s::{kind}[]" for kind in _RECORD_TYPES) + ") AS u(run_id, "
    + RECORD_COLUMNS + ", fence) JOIN held ON held.run_id = u.run_id AND held.fence = u.fence "
    + _UPSERT_RECORDS[_UPSERT_RECORDS.index("ON CONFLICT"):])


def _append_many(conn: Conn, many: list[Append]) -> bool:
    rows = _last_per_record([row for _, _, item_rows in many for row in item_rows])
    if rows is None:
        return False  # one at a time, so only the run that tried to change a record fails
    run_ids = sorted({run_id for run_id, _, _ in many})
    cur = conn.execute(_APPEND_HELD, [run_ids, *_columns(rows, len(_RECORD_TYPES))])
    return cur.rowcount == len(rows)


def bulk_kinds(channel: str) -> tuple[Bulk, Bulk, Bulk]:
    """The bulk operations (create, append, finish) of a store notifying on ``channel``."""

    def finish_many(conn: Conn, many: list[Finish]) -> bool:
        settled = finish_runs(conn, many)
        if len(settled) != len(many):
            return False  # a fence was stale: one at a time, so only that run fails
        notify_parents(conn, channel, settled, many)
        return True

    def create_many(conn: Conn, many: list[tuple[Any, ...]]) -> bool:
        if not _create_many(conn, many):
            return False
        if any(values[10] is None for values in many):  # a pending run: a worker may take it
            notify(conn, channel)
        return True

    return (Bulk("create", 0, create_many), Bulk("append", 1, _append_many),
            Bulk("finish", 2, finish_many))
