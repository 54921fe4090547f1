"""Runtime settings: one frozen object, merged once, then passed down.

Precedence: defaults < ``tether.toml`` ([runtime] table) < ``TETHER_*`` environment < arguments.
``SETTINGS`` is the table of every setting; it drives ``tether --help`` text, the README and a
test that keeps them in step.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tether.errors import ConfigError

Durability = Literal["power", "process"]

DEFAULT_DB = "sqlite:///.tether/tether.db"

_DB_KINDS = "sqlite:///PATH, postgresql://USER@HOST:PORT/DB or memory://"


def _db_url_ok(url: str) -> bool:
    return url.startswith(("sqlite://", "postgresql://", "postgres://")) or url == "memory://"


@dataclass(frozen=True, kw_only=True, slots=True)
class Regions:
    """Stores by region, and the region each tenant's data lives in.

    Read from ``[regions.NAME] db = "..."`` tables and the tenants of ``[governance.residency]``
    (the same list that says where a tenant's data may go says where it is kept: a tenant's
    home is the first of its regions that has a store). Every run of a tenant, with its
    journal, signals, approvals, audit chain and budget ledger, is kept only in its home
    region's store; a tenant with no home is refused (``NoHomeRegion``)."""

    stores: Mapping[str, str]
    """Each region's database URL, in the order configured. The first also keeps what belongs
    to no tenant (rate limits kept across tenants)."""

    homes: Mapping[str, str]
    """Each tenant's home region."""

    def __post_init__(self) -> None:
        if not self.stores:
            raise ConfigError("[regions] names no region; add [regions.NAME] with db = \"...\"")
        seen: dict[str, str] = {}
        for region, url in self.stores.items():
            if not _db_url_ok(url):
                raise ConfigError(f"regions.{region}.db must be {_DB_KINDS}, not {url!r}")
            if url in seen and url != "memory://":
                raise ConfigError(f"regions {seen[url]} and {region} name the same database "
                                  f"{url!r}: each region needs a store of its own")
            seen[url] = region
        for tenant, region in self.homes.items():
            if region not in self.stores:
                raise ConfigError(f"tenant {tenant!r} lives in region {region!r}, which has no "
                                  f"store; add [regions.{region}] db = \"...\"")
            if ":" in tenant or "|" in tenant:
                # Budget scopes (tenant:NAME:...) and rate-limit keys (|tenant=NAME|) carry
                # the tenant; these characters would make the region they go to ambiguous.
                raise ConfigError(f"tenant {tenant!r}: with [regions], a tenant name may not "
                                  "contain ':' or '|'")

    @classmethod
    def from_residency(cls, stores: Mapping[str, str],
                       tenants: Mapping[str, Sequence[str]]) -> Regions:
        """Each tenant's home: the first of its allowed regions (in the order listed) that has
        a store. A tenant none of whose regions has one is a ``ConfigError``: its runs could
        be kept nowhere it allows."""
        homes = {}
        for tenant, allowed in tenants.items():
            home = next((region for region in allowed if region in stores), None)
            if home is None:
                raise ConfigError(
                    f"governance.residency.tenants.{tenant}: none of its regions "
                    f"({', '.join(allowed) or 'none'}) has a store, so its runs could be kept "
                    f"nowhere; add [regions.{allowed[0] if allowed else 'NAME'}] db = \"...\"")
            homes[tenant] = home
        return cls(stores=dict(stores), homes=homes)


def residency_tenants(raw: object) -> dict[str, tuple[str, ...]]:
    """``[governance.residency] tenants``: each tenant's regions, in the order listed."""
    if not isinstance(raw, dict):
        raise ConfigError("governance.residency.tenants must be a table")
    tenants = {}
    for tenant, regions in raw.items():
        if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
            raise ConfigError(f"governance.residency.tenants.{tenant} must be a list of strings")
        tenants[str(tenant)] = tuple(regions)
    return tenants


def _regions(document: Mapping[str, Any], path: Path) -> Regions:
    """``[regions.NAME]`` tables with the tenants of ``[governance.residency]``."""
    table = document["regions"]
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [regions] must hold tables: [regions.NAME] db = \"...\"")
    stores = {}
    for region, entry in table.items():
        if not isinstance(entry, dict) or set(entry) != {"db"} or not isinstance(
                entry["db"], str):
            raise ConfigError(f"{path}: [regions.{region}] takes exactly one key, db = \"...\" "
                              f"({_DB_KINDS})")
        stores[str(region)] = entry["db"]
    governance = document.get("governance")
    residency = governance.get("residency") if isinstance(governance, dict) else None
    raw = residency.get("tenants", {}) if isinstance(residency, dict) else {}
    try:
        return Regions.from_residency(stores, residency_tenants(raw))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}") from None


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """Everything a runtime needs to know, validated when built."""

    db: str = DEFAULT_DB
    """Where runs live: ``sqlite:///path``, ``sqlite:////abs/path``,
    ``postgresql://user@host:port/db[?schema=NAME]`` (many workers) or ``memory://``."""

    durability: Durability = "power"
    """``power``: a committed record survives power loss (SQLite synchronous=FULL, an fsync per
    commit). ``process``: it survives a crash of the process but maybe not of the machine
    (synchronous=NORMAL: the OS decides when to write)."""

    flush_interval_ms: int = 20
    """The most a lazily committed record (model reply, read-only tool result) may wait before
    it is committed, in milliseconds. Effects that need durability never wait for this."""

    flush_max_records: int = 1024
    """Commit lazily queued records once this many are waiting, whatever the interval."""

    lazy_records_per_run: int = 64
    """The most records one run may write lazily before it waits for a commit: what a crash
    can lose of a run, however busy the writer is, is at most this many records (model
    replies and read-only results, which a replay asks for again)."""

    lease_seconds: float = 30.0
    """How long a worker's claim on a run lasts without a heartbeat before another may take it
    over. A worker on the same host that has died is taken over at once."""

    poll_interval_seconds: float = 1.0
    """How often a worker looks for due timers, signals and runs left by other processes."""

    max_concurrent_runs: int = 10_000
    """Runs one process executes at once; the rest stay queued in the store."""

    memory_sleep_seconds: float = 1.0
    """A ``ctx.sleep`` this short or shorter waits in memory (after a durable record); a longer
    one unloads the run, which is then replayed when the timer is due."""

    gc_threshold: int = 200_000
    """While a runtime is open, Python's cyclic garbage collector starts a young collection
    after this many new objects instead of its default 700, and an older one after 100 young
    ones instead of 10 (0 leaves the collector alone). With thousands of runs in flight each
    collection walks the state of every run: measured here (B2, 10,000 runs), the defaults
    spent 60% of the CPU in the collector; 50,000 left 0.5 s of 3.6 s there, 200,000 0.2 s."""

    switch_interval_ms: float = 0.5
    """While a runtime is open, how long Python lets one thread run before handing the GIL
    to another that asks for it (``sys.setswitchinterval``; Python's default is 5 ms; 0 leaves
    it alone). The SQLite writer thread asks for the GIL back after every statement; with the
    event loop busy, the default made it wait up to 5 ms each time (B2 at 10,000 runs: 5.65 s
    with 5 ms, 4.9 s with 0.5 ms)."""

    tenant: str = "default"
    """Tenant a run belongs to when the caller names none."""

    principal: str = "default"
    """Principal a run acts for when the caller names none."""

    regions: Regions | None = None
    """Stores by region, from ``[regions.NAME]`` tables (not a ``[runtime]`` key or a
    variable): when set, each tenant's data is kept only in its home region's store and ``db``
    is not used. See ``Regions``."""

    def __post_init__(self) -> None:
        if self.durability not in ("power", "process"):
            raise ConfigError(f"durability must be 'power' or 'process', not {self.durability!r}")
        if self.switch_interval_ms < 0:
            raise ConfigError("switch_interval_ms must be 0 (leave it alone) or positive")
        if self.gc_threshold < 0:
            raise ConfigError("gc_threshold must be 0 (leave the collector alone) or positive")
        for name in ("flush_interval_ms", "flush_max_records", "lazy_records_per_run",
                     "max_concurrent_runs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)!r}")
        for name in ("lease_seconds", "poll_interval_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)!r}")
        if self.memory_sleep_seconds < 0:
            raise ConfigError("memory_sleep_seconds must not be negative")
        if not _db_url_ok(self.db):
            raise ConfigError(f"db must be {_DB_KINDS}, not {self.db!r}")

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)


SETTINGS: tuple[tuple[str, str], ...] = tuple(
    (f.name, f"TETHER_{f.name.upper()}") for f in dataclasses.fields(Settings)
    if f.name != "regions"
)
"""(setting, environment variable) for every setting of ``[runtime]`` (``regions`` has tables
of its own)."""


def _coerce(name: str, raw: object, source: str) -> object:
    field = next(f for f in dataclasses.fields(Settings) if f.name == name)
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    try:
        if kind == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(raw)  # type: ignore[call-overload]
        if kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        what = "a whole number" if kind == "int" else "a number"
        raise ConfigError(f"{source}: {name} must be {what}, not {raw!r}") from None
    if not isinstance(raw, str):
        raise ConfigError(f"{source}: {name} must be a string, not {raw!r}")
    return raw


def config_file(path: Path | None) -> Path | None:
    """The config file to read: ``path`` when given, else ``./tether.toml`` if it exists."""
    if path is None and Path("tether.toml").is_file():
        return Path("tether.toml")
    return path


def read_toml(path: Path, what: str = "config file") -> dict[str, Any]:
    """A TOML file's tables; a missing or malformed file is a ``ConfigError`` naming it.

    Every part of Tether that has a table in ``tether.toml`` reads the file through this.
    """
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Merge defaults, the config file, ``TETHER_*`` variables and explicit overrides.

    Args:
        path: a ``tether.toml``; when None, ``./tether.toml`` is read if it exists.
        environ: the environment to read (``os.environ`` when None).
        overrides: settings given directly (CLI flags); ``None`` values are ignored.

    Raises:
        ConfigError: naming the file or variable, the key, and what is allowed.
    """
    environ = os.environ if environ is None else environ
    known = {name for name, _ in SETTINGS}
    values: dict[str, object] = {}
    sources: dict[str, str] = {}  # where each value came from, for error messages
    path = config_file(path)
    if path is not None:
        document = read_toml(path)
        table = document.get("runtime", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [runtime] must be a table")
        for key, raw in table.items():
            if key not in known:
                raise ConfigError(f"{path}: unknown key runtime.{key}; known keys: "
                                  + ", ".join(sorted(known)))
            sources[key] = f"{path} runtime.{key}"
            values[key] = _coerce(key, raw, sources[key])
        if "regions" in document:
            values["regions"] = _regions(document, path)
    for name, variable in SETTINGS:
        if variable in environ:
            sources[name] = variable
            values[name] = _coerce(name, environ[variable], variable)
    for name, raw in overrides.items():
        if raw is None:
            continue
        if name not in known:
            raise ConfigError(f"unknown setting {name!r}")
        sources.pop(name, None)
        values[name] = raw
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ConfigError as exc:
        # Settings' own checks name the setting first; blame the layer that supplied it.
        source = sources.get(exc.message.split(" ", 1)[0])
        raise ConfigError(f"{source}: {exc.message}" if source else exc.message) from None
