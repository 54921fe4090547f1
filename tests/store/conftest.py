"""The ``store`` fixture: each protocol test runs once per engine.

PostgreSQL tests each get a schema of their own (named after the test's directory, so a test
that reopens a store finds its data again), dropped when the test ends; without
``TETHER_TEST_POSTGRES_URL`` they skip locally and fail in CI (``tests/peers.py``).

``routed`` is a ``RoutedStore`` over two SQLite files, ``eu.db`` (tenant acme, the tenant
of most tests) and ``us.db`` (tenant globex): the protocol holds over stores by region too,
including the calls that span both (listing, claiming, audit tenants, approvals).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from peers import drop_postgres_schema, postgres_schema_url, schema_for
from tether.store import MemoryStore, RoutedStore, SQLiteStore, Store

ENGINES = ("memory", "sqlite", "postgres", "routed")

ROUTED_HOMES = {"acme": "eu", "globex": "us"}

# Long enough that a lazy write is committed only by a later durable one within a test, so
# the ordering tests see what the protocol promises rather than a timer that happened to fire.
LAZY_FLUSH_MS = 10_000


def build_store(engine: str, directory: Path, *, flush_interval_ms: int = LAZY_FLUSH_MS,
                ) -> Store:
    """A new, unopened store of ``engine`` whose data (if any) lives under ``directory``."""
    if engine == "memory":
        return MemoryStore()
    if engine == "sqlite":
        return SQLiteStore(directory / "tether.db", flush_interval_ms=flush_interval_ms)
    if engine == "postgres":
        from tether.store import PostgresStore

        return PostgresStore(postgres_schema_url(schema_for(directory)),
                             flush_interval_ms=flush_interval_ms)
    if engine == "routed":
        return RoutedStore({region: SQLiteStore(directory / f"{region}.db",
                                                flush_interval_ms=flush_interval_ms)
                            for region in ("eu", "us")}, ROUTED_HOMES)
    raise AssertionError(f"unknown engine {engine!r}")



@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def store(engine: str, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store of each engine, closed after the test."""
    opened = build_store(engine, tmp_path)
    try:
        await opened.open()
        try:
            yield opened
        finally:
            await opened.aclose()
    finally:
        if engine == "postgres":
            drop_postgres_schema(schema_for(tmp_path))
