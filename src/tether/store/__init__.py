"""Persistence: the ``Store`` protocol and its engines.

Layout: ``_protocol.py`` (Store, rows, Commit), ``_common.py`` (rules both engines share),
``_sqlite.py`` + ``_sqlite_writer.py`` (embedded default, group commit), ``_memory.py``
(``memory://``), ``migrations/`` (versioned schema scripts).
"""

from __future__ import annotations

from pathlib import Path

from tether.config import Settings
from tether.errors import ConfigError
from tether.store._common import CHILD_SIGNAL_PREFIX
from tether.store._memory import MemoryStore
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
    Store,
)
from tether.store._sqlite import SQLiteStore

__all__ = [
    "CHILD_SIGNAL_PREFIX", "MISSING", "Claim", "Commit", "Created", "MemoryStore", "Missing",
    "NewRun", "OwnerIsDead", "Record", "RecordState", "SQLiteStore", "Store", "open_store",
    "sqlite_path",
]


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    rest = url.removeprefix("sqlite://")
    if not rest.startswith("/") or rest == "/":
        raise ConfigError(f"db {url!r}: write sqlite:///relative/path or sqlite:////absolute/path")
    return Path(rest[1:])


def open_store(settings: Settings) -> Store:
    """Build (not yet open) the store ``settings.db`` names."""
    url = settings.db
    if url == "memory://":
        return MemoryStore()
    if url.startswith("sqlite://"):
        return SQLiteStore(sqlite_path(url), durability=settings.durability,
                           flush_interval_ms=settings.flush_interval_ms,
                           flush_max_records=settings.flush_max_records)
    raise ConfigError(f"db {url!r}: this Tether supports sqlite:///PATH and memory:// "
                      "(PostgreSQL support is planned)")
