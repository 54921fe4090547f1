"""Persistence: the ``Store`` protocol and its engines.

Layout: ``_protocol.py`` (Store, rows, Commit), ``_common.py`` (rules both engines share),
``_writer.py`` (group commit, shared by the SQL engines), ``_sqlite.py`` (embedded default),
``_postgres.py`` (many workers), ``_memory.py``
(``memory://``), ``_routed.py`` (one store per region, ``[regions.NAME]``), ``migrations/``
(versioned schema scripts).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.config import Settings
from tether.errors import ConfigError
from tether.store._common import (
    AUDIT_GENESIS,
    CHILD_SIGNAL_PREFIX,
    approval_signal,
    chain_hash,
)
from tether.store._ledger_common import gcra_step
from tether.store._memory import MemoryStore
from tether.store._protocol import (
    MISSING,
    Approval,
    AuditRow,
    Claim,
    Commit,
    Created,
    LedgerEntry,
    Missing,
    NewRun,
    OwnerIsDead,
    Record,
    RecordState,
    Store,
    Waker,
)
from tether.store._routed import RoutedStore
from tether.store._sqlite import SQLiteStore

if TYPE_CHECKING:
    from tether.store._postgres import PostgresStore

__all__ = [
    "AUDIT_GENESIS", "Approval", "AuditRow", "approval_signal", "chain_hash", "gcra_step",
    "CHILD_SIGNAL_PREFIX", "MISSING", "Claim", "Commit", "Created", "LedgerEntry", "MemoryStore",
    "Missing", "NewRun", "OwnerIsDead", "PostgresStore", "Record", "RecordState", "RoutedStore",
    "SQLiteStore", "Store", "Waker", "open_store", "sqlite_path",
]


def __getattr__(name: str) -> Any:
    # PostgresStore needs the optional driver: imported when first asked for.
    if name == "PostgresStore":
        from tether.store._postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    rest = url.removeprefix("sqlite://")
    if not rest.startswith("/") or rest == "/":
        raise ConfigError(f"db {url!r}: write sqlite:///relative/path or sqlite:////absolute/path")
    return Path(rest[1:])


def open_store(settings: Settings) -> Store:
    """Build (not yet open) the store ``settings.db`` names; with ``settings.regions``, a
    ``RoutedStore`` over each region's store instead (``db`` is then not used)."""
    regions = settings.regions
    if regions is not None:
        return RoutedStore({region: open_store(settings.replace(db=url, regions=None))
                            for region, url in regions.stores.items()}, regions.homes)
    url = settings.db
    if url == "memory://":
        return MemoryStore()
    if url.startswith("sqlite://"):
        return SQLiteStore(sqlite_path(url), durability=settings.durability,
                           flush_interval_ms=settings.flush_interval_ms,
                           flush_max_records=settings.flush_max_records)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from tether.store._postgres import PostgresStore  # the driver is an optional extra
        except ImportError:
            raise ConfigError(f"db {url!r} needs the PostgreSQL driver: "
                              "pip install 'tether[postgres]'") from None
        return PostgresStore(url, flush_interval_ms=settings.flush_interval_ms,
                             flush_max_records=settings.flush_max_records)
    raise ConfigError(f"db {url!r}: write sqlite:///PATH, postgresql://USER@HOST:PORT/DB "
                      "or memory://")
