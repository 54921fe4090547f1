"""Runtime settings: one frozen object, merged once, then passed down.

Precedence: defaults < ``tether.toml`` ([runtime] table) < ``TETHER_*`` environment < arguments.
``SETTINGS`` is the table of every setting; it drives ``tether --help`` text, the README and a
test that keeps them in step.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tether.errors import ConfigError

Durability = Literal["power", "process"]

DEFAULT_DB = "sqlite:///.tether/tether.db"


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
        if not (self.db.startswith(("sqlite://", "postgresql://", "postgres://"))
                or self.db == "memory://"):
            raise ConfigError(
                f"db must be sqlite:///PATH, postgresql://USER@HOST:PORT/DB or memory://, "
                f"not {self.db!r}")

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)


SETTINGS: tuple[tuple[str, str], ...] = tuple(
    (f.name, f"TETHER_{f.name.upper()}") for f in dataclasses.fields(Settings)
)
"""(setting, environment variable) for every setting."""


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
