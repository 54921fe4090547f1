"""Rate limits and budget ledgers of ``SQLiteStore`` (see ``Store.gcra`` and on).

Both go through the writer: every step runs inside a ``BEGIN IMMEDIATE`` transaction, so a
read-modify-write here is atomic against every other process on the file. Many callers'
steps share one commit (group commit), which is what keeps a store-backed limit affordable.
"""

from __future__ import annotations

import sqlite3
from typing import TypeVar

from tether.store._ledger_common import entries_json, gcra_step, ordered, over_cap
from tether.store._protocol import LedgerEntry
from tether.store._sqlite_reads import SQLiteReads

T = TypeVar("T")


def _gcra(conn: sqlite3.Connection, key: str, now_us: int, increment_us: int,
          limit_us: int) -> int:
    row = conn.execute("SELECT tat_us FROM rate_limits WHERE key = ?", (key,)).fetchone()
    new, wait = gcra_step(None if row is None else row[0], now_us, increment_us, limit_us)
    if new is not None:
        conn.execute("INSERT INTO rate_limits (key, tat_us) VALUES (?, ?) ON CONFLICT (key) "
                     "DO UPDATE SET tat_us = excluded.tat_us", (key, new))
    return wait


def _post(conn: sqlite3.Connection, post_id: str, entries: list[LedgerEntry],
          now_ms: int) -> bool:
    if conn.execute("SELECT 1 FROM ledger_posts WHERE post_id = ?", (post_id,)).fetchone():
        return False
    for entry in ordered(entries):
        row = conn.execute("SELECT balance FROM ledger WHERE scope = ?",
                           (entry.scope,)).fetchone()
        balance = 0 if row is None else int(row[0])
        if entry.cap is not None and balance + entry.amount > entry.cap:
            raise over_cap(entry, balance)  # before any write: nothing to roll back
    conn.executemany(
        "INSERT INTO ledger (scope, balance, updated_at_ms) VALUES (?, ?, ?) ON CONFLICT (scope) "
        "DO UPDATE SET balance = balance + excluded.balance, updated_at_ms = excluded.updated_at_ms",
        [(entry.scope, entry.amount, now_ms) for entry in entries])
    conn.execute("INSERT INTO ledger_posts (post_id, entries_json, at_ms) VALUES (?, ?, ?)",
                 (post_id, entries_json(entries), now_ms))
    return True


class SQLiteLedger(SQLiteReads):
    """Mixed into ``SQLiteStore``, whose writer and readers it uses."""

    async def gcra(self, key: str, *, now_us: int, increment_us: int, limit_us: int) -> int:
        return await self._write(lambda conn: _gcra(conn, key, now_us, increment_us, limit_us))

    async def ledger_post(self, post_id: str, entries: list[LedgerEntry], *,
                          now_ms: int) -> bool:
        return await self._write(lambda conn: _post(conn, post_id, entries, now_ms))

    async def ledger_balances(self, scopes: list[str]) -> dict[str, int]:
        def query(conn: sqlite3.Connection) -> dict[str, int]:
            marks = ", ".join("?" * len(scopes))
            rows = conn.execute(f"SELECT scope, balance FROM ledger WHERE scope IN ({marks})",
                                scopes).fetchall()
            return dict.fromkeys(scopes, 0) | {row[0]: int(row[1]) for row in rows}
        return await self._read(query)
