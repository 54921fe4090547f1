"""The statements the SQLite store runs on the writer's connection, one row at a time and in
bulk. The bulk forms pass a JSON array that SQLite unpacks with ``json_each``, so a batch of
thousands of operations is a handful of statements (see ``_writer``)."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

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

_FORWARD_ONLY = (
    " ON CONFLICT (run_id, seq) DO UPDATE SET state = excluded.state, "
    "value_json = excluded.value_json, attempts = excluded.attempts, "
    "finished_at_ms = excluded.finished_at_ms, detail_json = excluded.detail_json "
    "WHERE journal.state = 'started'")
_UPSERT_RECORD = ("INSERT INTO journal (run_id, " + RECORD_COLUMNS
                  + ") VALUES (?,?,?,?,?,?,?,?,?,?,?)" + _FORWARD_ONLY)


def _columns_of(array_length: int) -> str:
    """``json_extract(value, '$[0]'), ...``: the columns of a JSON array row."""
    return ", ".join(f"json_extract(value, '$[{i}]')" for i in range(array_length))


# -- runs ------------------------------------------------------------------------------------

def select_run(conn: sqlite3.Connection, run_id: str) -> Run | None:
    row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else run_from_row(row)


def require_run(conn: sqlite3.Connection, run_id: str) -> Run:
    run = select_run(conn, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


def check_fence(conn: sqlite3.Connection, run_id: str, fence: int) -> None:
    row = conn.execute("SELECT fence, status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None or row[0] != fence or row[1] != "running":
        raise LeaseLost(run_id)


def insert_run(conn: sqlite3.Connection, values: tuple[Any, ...]) -> bool:
    """Insert a run (``INSERT_RUN_COLUMNS`` order); False when the id exists already."""
    return bool(conn.execute(
        f"INSERT INTO runs ({INSERT_RUN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (run_id) DO NOTHING", values).rowcount)


def _insert_runs(conn: sqlite3.Connection, many: list[tuple[Any, ...]]) -> bool:
    before = conn.total_changes
    conn.execute(f"INSERT INTO runs ({INSERT_RUN_COLUMNS}) SELECT {_columns_of(15)} "
                 "FROM json_each(?) WHERE true ON CONFLICT (run_id) DO NOTHING",
                 (orjson.dumps(many),))
    return conn.total_changes - before == len(many)  # else an id existed: one at a time


CREATE = Bulk("create", 0, _insert_runs)

Finish = tuple[str, int, str, str | None, str | None, int]  # run, fence, status, result, error, now


# Settling a run: its outcome, and it is released (no owner, no timer, a new fence).
_SETTLE = ("UPDATE runs SET status = ?, result_json = ?, error_json = ?, owner = NULL, "
           "lease_expires_at_ms = 0, wake_at_ms = NULL, waiting_for = NULL, updated_at_ms = ?, "
           "finished_at_ms = ?, fence = fence + 1 WHERE run_id = ?")


def finish_run(conn: sqlite3.Connection, finish: Finish) -> None:
    """Settle one run under its fence; a child run's end is signalled to its parent."""
    run_id, fence, status, result, error, now_ms = finish
    row = conn.execute(
        _SETTLE + " AND fence = ? AND status = 'running' RETURNING parent_run_id",
        (status, result, error, now_ms, now_ms if RunStatus(status).is_terminal else None,
         run_id, fence)).fetchone()
    if row is None:
        raise LeaseLost(run_id)
    if row[0] is not None:
        notify_parent(conn, row[0], finish)


def _finish_runs(conn: sqlite3.Connection, many: list[Finish]) -> bool:
    before = conn.total_changes
    conn.execute(
        "UPDATE runs SET status = f.status, result_json = f.result, error_json = f.error, "
        "owner = NULL, lease_expires_at_ms = 0, wake_at_ms = NULL, waiting_for = NULL, "
        "updated_at_ms = f.now, fence = runs.fence + 1, finished_at_ms = CASE WHEN f.status "
        "IN ('completed', 'failed', 'cancelled') THEN f.now END "
        "FROM (SELECT json_extract(value, '$[0]') AS run_id, json_extract(value, '$[1]') AS "
        "fence, json_extract(value, '$[2]') AS status, json_extract(value, '$[3]') AS result, "
        "json_extract(value, '$[4]') AS error, json_extract(value, '$[5]') AS now "
        "FROM json_each(?)) AS f "
        # '+' keeps the planner off the status index: it must look each run up by id, not
        # scan every running run for each one settled (quadratic; seconds at 10,000 runs).
        "WHERE runs.run_id = f.run_id AND runs.fence = f.fence AND +runs.status = 'running'",
        (orjson.dumps(many),))
    if conn.total_changes - before != len(many):
        return False  # a fence was stale: one at a time, so only that run fails
    (parents,) = conn.execute(
        "SELECT json_group_object(run_id, parent_run_id) FROM runs WHERE parent_run_id IS NOT "
        "NULL AND run_id IN (SELECT value FROM json_each(?))",
        (orjson.dumps([finish[0] for finish in many]),)).fetchone()
    parent_of = orjson.loads(parents)
    for finish in many:
        if finish[0] in parent_of:
            notify_parent(conn, parent_of[finish[0]], finish)
    return True


FINISH = Bulk("finish", 2, _finish_runs)


def notify_parent(conn: sqlite3.Connection, parent_run_id: str, finish: Finish) -> None:
    run_id, _, status, result, error, now_ms = finish
    if RunStatus(status).is_terminal:
        name, data = child_signal(run_id, RunStatus(status), result, error)
        deliver(conn, parent_run_id, name, data, now_ms)


def deliver(conn: sqlite3.Connection, run_id: str, name: str, data: str | None,
            now_ms: int) -> None:
    """Store a signal; a run waiting for it becomes pending."""
    conn.execute("INSERT INTO signals (run_id, name, data_json, sent_at_ms) VALUES (?,?,?,?)",
                 (run_id, name, data, now_ms))
    conn.execute("UPDATE runs SET status = 'pending', wake_at_ms = NULL, waiting_for = NULL, "
                 "updated_at_ms = ? WHERE run_id = ? AND status = 'waiting' AND waiting_for = ?",
                 (now_ms, run_id, name))


def settle(conn: sqlite3.Connection, run: Run, status: RunStatus, result: str | None,
           error: str | None, now_ms: int) -> None:
    """Settle a run whatever its fence (operators: cancel, resolve --fail)."""
    conn.execute(_SETTLE, (str(status), result, error, now_ms,
                           now_ms if status.is_terminal else None, run.run_id))
    if run.parent_run_id is not None:
        notify_parent(conn, run.parent_run_id, (run.run_id, 0, str(status), result, error, now_ms))


# -- journal ---------------------------------------------------------------------------------

def upsert_rows(conn: sqlite3.Connection, run_id: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert or move forward journal rows; a final record never changes."""
    before = conn.total_changes
    conn.executemany(_UPSERT_RECORD, rows)
    if conn.total_changes - before != len(rows):
        raise StoreError(f"run {run_id}: a journal record that is already final cannot change")


Append = tuple[str, int, list[tuple[Any, ...]]]  # run, fence, rows


def append(conn: sqlite3.Connection, item: Append) -> None:
    run_id, fence, rows = item
    check_fence(conn, run_id, fence)
    upsert_rows(conn, run_id, rows)


def _append_many(conn: sqlite3.Connection, many: list[Append]) -> bool:
    fences = {(run_id, fence) for run_id, fence, _ in many}
    (current,) = conn.execute(
        "SELECT json_group_array(json_array(run_id, fence)) FROM runs WHERE +status = 'running' "
        "AND run_id IN (SELECT value FROM json_each(?))",  # '+': by id, as in _finish_runs
        (orjson.dumps(sorted({run_id for run_id, _ in fences})),)).fetchone()
    if not fences <= {(run_id, fence) for run_id, fence in orjson.loads(current)}:
        return False  # a stale fence: one at a time, so only that run fails
    rows = [row for _, _, item_rows in many for row in item_rows]
    before = conn.total_changes
    conn.execute("INSERT INTO journal (run_id, " + RECORD_COLUMNS + ") SELECT "
                 + _columns_of(11) + " FROM json_each(?) WHERE true" + _FORWARD_ONLY,
                 (orjson.dumps(rows),))  # 'WHERE true' lets ON CONFLICT follow a SELECT
    return conn.total_changes - before == len(rows)


APPEND = Bulk("append", 1, _append_many)
