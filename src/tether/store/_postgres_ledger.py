"""Rate limits and budget ledgers of ``PostgresStore`` (see ``Store.gcra`` and on).

Many processes share these rows, so each step is one atomic statement: an ``UPDATE ...
RETURNING`` whose ``WHERE`` holds the check. A refused step changes nothing, and two workers
racing for the last unit are serialized by the row lock, never both admitted. A post spanning
several scopes locks their rows in scope order (no deadlock between two posts) and is rolled
back whole, by the writer's savepoint, when one of them would pass its cap.
"""

from __future__ import annotations

from tether.store._ledger_common import entries_json, ordered, over_cap
from tether.store._postgres_reads import PostgresReads
from tether.store._postgres_sql import Conn
from tether.store._protocol import LedgerEntry

_GCRA = """
INSERT INTO rate_limits AS r (key, tat_us) VALUES (%(key)s, %(now)s + %(inc)s)
ON CONFLICT (key) DO UPDATE SET tat_us = GREATEST(r.tat_us, %(now)s) + %(inc)s
    WHERE GREATEST(r.tat_us, %(now)s) + %(inc)s - %(now)s <= %(limit)s
RETURNING tat_us
"""


def _gcra(conn: Conn, key: str, now_us: int, increment_us: int, limit_us: int) -> int:
    if increment_us > limit_us:  # never admitted, not even on an empty key
        return increment_us - limit_us
    params = {"key": key, "now": now_us, "inc": increment_us, "limit": limit_us}
    if conn.execute(_GCRA, params).fetchone() is not None:
        return 0
    row = conn.execute("SELECT tat_us FROM rate_limits WHERE key = %s", (key,)).fetchone()
    assert row is not None, "refused, so the row exists"
    return max(int(row[0]), now_us) + increment_us - now_us - limit_us


def _post(conn: Conn, post_id: str, entries: list[LedgerEntry], now_ms: int) -> bool:
    inserted = conn.execute(
        "INSERT INTO ledger_posts (post_id, entries_json, at_ms) VALUES (%s, %s, %s) "
        "ON CONFLICT (post_id) DO NOTHING RETURNING 1",
        (post_id, entries_json(entries), now_ms)).fetchone()
    if inserted is None:
        return False
    for entry in ordered(entries):
        conn.execute("INSERT INTO ledger (scope, balance, updated_at_ms) VALUES (%s, 0, %s) "
                     "ON CONFLICT (scope) DO NOTHING", (entry.scope, now_ms))
        row = conn.execute(
            "UPDATE ledger SET balance = balance + %(amount)s, updated_at_ms = %(now)s "
            "WHERE scope = %(scope)s AND (%(cap)s::bigint IS NULL "
            "OR balance + %(amount)s <= %(cap)s::bigint) RETURNING balance",
            {"amount": entry.amount, "now": now_ms, "scope": entry.scope,
             "cap": entry.cap}).fetchone()
        if row is None:
            found = conn.execute("SELECT balance FROM ledger WHERE scope = %s",
                                 (entry.scope,)).fetchone()
            # Raised inside the writer's savepoint: every row posted above is rolled back.
            raise over_cap(entry, 0 if found is None else int(found[0]))
    return True


class PostgresLedger(PostgresReads):
    """Mixed into ``PostgresStore``, whose writer and reader pool it uses."""

    async def gcra(self, key: str, *, now_us: int, increment_us: int, limit_us: int) -> int:
        return await self._write(lambda conn: _gcra(conn, key, now_us, increment_us, limit_us))

    async def ledger_post(self, post_id: str, entries: list[LedgerEntry], *,
                          now_ms: int) -> bool:
        return await self._write(lambda conn: _post(conn, post_id, entries, now_ms))

    async def ledger_balances(self, scopes: list[str]) -> dict[str, int]:
        rows = await self._read(
            "SELECT scope, balance FROM ledger WHERE scope = ANY(%s)", (scopes,))
        return dict.fromkeys(scopes, 0) | {row[0]: int(row[1]) for row in rows}
