"""Shared fixtures: real stores on disk, the scripted model, runtimes that are always closed."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import tether
from peers import drop_postgres_schema, postgres_schema_url, schema_for
from tether.config import Settings

# CI machines are shared and slow; a property run may take longer than hypothesis's default.
settings.register_profile("tether", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tether")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every runtime test runs on each engine: memory://, a real SQLite file, and a schema of
    its own on the PostgreSQL server (dropped afterwards)."""
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tether.db'}"
    else:
        schema = schema_for(tmp_path)
        yield postgres_schema_url(schema)
        drop_postgres_schema(schema)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tether.db'}"


def fast_settings(db: str, **changes: object) -> Settings:
    """Settings for tests: short polls so timers and cross-process changes show up quickly."""
    return Settings(db=db, poll_interval_seconds=0.05, flush_interval_ms=5,
                    **changes)  # type: ignore[arg-type]


@pytest.fixture
async def runtime(db_url: str) -> AsyncIterator[tether.Runtime]:
    async with tether.Runtime(settings=fast_settings(db_url)) as rt:
        yield rt


@pytest.fixture(autouse=True)
def _no_tether_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not pick up a developer's TETHER_* settings (``TETHER_TEST_*`` say where
    the test peers are: see ``tests/peers.py``)."""
    for name in list(os.environ):
        if name.startswith("TETHER_") and not name.startswith("TETHER_TEST_"):
            monkeypatch.delenv(name)
