"""The ``store`` fixture: each protocol test runs once per engine.

To add an engine (PostgreSQL), add its name to ``ENGINES`` and a branch to ``build_store``
that skips when its server is not configured; every test in this directory then covers it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tether.store import MemoryStore, SQLiteStore, Store

ENGINES = ("memory", "sqlite")

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
    raise AssertionError(f"unknown engine {engine!r}")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def store(engine: str, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store of each engine, closed after the test."""
    opened = build_store(engine, tmp_path)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.aclose()
