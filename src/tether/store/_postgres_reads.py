"""How the PostgreSQL store reads: on a small async connection pool beside the writer, and how
it reports psycopg's errors. A base of ``PostgresStore`` and of the parts mixed into it
(governance, ledger), which read the same way."""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg_pool

from tether.errors import StoreError
from tether.store._writer import WriterStore


def store_error(exc: Exception, location: str) -> StoreError:
    """Map a psycopg error to Tether's tree, with advice a person can act on."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.OperationalError):
        return StoreError(f"{location}: cannot reach PostgreSQL ({text}); is the server running "
                          "and the URL right? Runs resume once it is back")
    return StoreError(f"{location}: {text}")


class PostgresReads(WriterStore):
    """Reads through ``_pool`` (opened and closed by the store)."""

    _pool: psycopg_pool.AsyncConnectionPool[Any] | None = None

    async def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._pool is None:
            raise StoreError(f"{self.location} is not open")
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(sql, params)
                rows: list[tuple[Any, ...]] = await cur.fetchall()
                return rows
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise store_error(exc, self.location) from None
