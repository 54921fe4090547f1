"""Sandbox profiles: what a sandboxed process may see, touch and spend.

A profile is named and frozen. ``default`` is built in and strict (no network, an empty
environment, a fresh workspace, 30 s CPU, 60 s wall, 512 MiB, 64 processes, 64 MiB per file);
``tether.toml`` adds or overrides profiles in ``[sandbox.profiles.NAME]`` tables, each starting
from ``default``, so a profile only states what it loosens::

    [sandbox]
    python = "/usr/bin/python3.11"      # optional: the interpreter sandboxed Python runs on

    [sandbox.profiles.build]
    writable = ["/srv/cache"]
    cpu_seconds = 120
    memory_bytes = "2GiB"
    warm_workers = 2

    [sandbox.profiles.fetch]
    network = ["api.example.com", "*.githubusercontent.com"]   # through the proxy only
    workspace = "run"                                          # one workspace per run
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic

from tether.config import config_file, read_toml
from tether.errors import ConfigError
from tether.sandbox._hosts import check_host_pattern

_UNITS = {"": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3,
          "gib": 1024**3}


def _size(value: Any) -> Any:
    """``"512MiB"``, ``"64M"`` or a number of bytes."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", value)
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(f"not a size: {value!r} (write bytes, or e.g. '512MiB', '2GiB')")
        return int(match.group(1)) * _UNITS[match.group(2).lower()]
    return value


def _absolute(paths: tuple[str, ...]) -> tuple[str, ...]:
    for path in paths:
        if not path.startswith("/") or "\x00" in path:
            raise ValueError(f"paths must be absolute: {path!r}")
    return tuple(str(Path(p)) for p in paths)


Size = Annotated[int, pydantic.BeforeValidator(_size), pydantic.Field(gt=0)]
Paths = Annotated[tuple[str, ...], pydantic.AfterValidator(_absolute)]


class Profile(pydantic.BaseModel):
    """What one sandboxed process (and everything it starts) may do.

    Limits apply to the whole sandbox: its processes share one memory and process budget
    (a cgroup where the machine has one) and one wall clock.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    name: str = "default"
    read_only: Paths = ()
    """Host paths mounted read-only at the same place (the system's ``/usr`` always is)."""
    writable: Paths = ()
    """Host paths mounted writable at the same place. The workspace always is."""
    network: Literal["none"] | tuple[str, ...] = "none"
    """``none``: an empty network namespace and no sockets but unix ones. A list of host
    names (``api.example.com``, or ``*.example.com`` for any name under it): still an empty
    network namespace, plus an HTTP CONNECT proxy on ``127.0.0.1`` inside (``HTTPS_PROXY``
    points at it) that admits only those names; no DNS, no UDP, nothing direct."""
    workspace: Literal["call", "run"] = "call"
    """``call``: a fresh workspace per call. ``run``: one per run, kept across that run's calls
    and removed when it ends (never shared between runs or tenants)."""
    env: tuple[str, ...] = ()
    """Names of host environment variables passed in; everything else is cleared."""
    cpu_seconds: Annotated[int, pydantic.Field(gt=0)] = 30
    wall_seconds: Annotated[float, pydantic.Field(gt=0)] = 60.0
    memory_bytes: Size = 512 * 1024**2
    processes: Annotated[int, pydantic.Field(gt=0)] = 64
    """Processes and threads of the whole sandbox, its own init included."""
    file_size_bytes: Size = 64 * 1024**2
    open_files: Annotated[int, pydantic.Field(ge=16)] = 256
    output_bytes: Size = 1024**2
    """Captured stdout and stderr kept per stream; the rest is dropped and flagged."""
    landlock: Literal["auto", "required", "off"] = "auto"
    """Landlock as a further layer: ``auto`` where the kernel has it, ``required`` refuses to
    run without it."""
    warm_workers: Annotated[int, pydantic.Field(ge=0, le=64)] = 0
    """Pre-started workers kept ready for sandboxed tool calls (each serves one call; only
    with ``workspace = "call"``: a run's workspace is mounted when its call comes)."""

    @pydantic.field_validator("env")
    @classmethod
    def _env_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"not an environment variable name: {name!r}")
        return names

    @pydantic.field_validator("network", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            if not value:
                return "none"  # an empty allow-list admits nothing: the same as none
            return tuple(check_host_pattern(str(entry)) for entry in value)
        return value

    @pydantic.model_validator(mode="after")
    def _warm_needs_call_workspaces(self) -> Profile:
        if self.warm_workers and self.workspace == "run":
            raise ValueError("warm_workers needs workspace = 'call' (a run's workspace is "
                             "mounted when the run's call comes, so no worker can wait for it)")
        return self


DEFAULT_PROFILE = Profile()


class SandboxConfig(pydantic.BaseModel):
    """The ``[sandbox]`` table: the interpreter, the uid range and the profiles."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    python: str | None = None
    """The interpreter sandboxed Python runs on (default: found; see ``tether doctor``)."""
    uid_base: Annotated[int, pydantic.Field(gt=0, lt=2**31)] = 1_900_000_000
    """First host uid given to sandboxes when the runtime is root. Each sandbox gets its own
    uid from ``uid_base`` to ``uid_base + uid_count - 1``; none of them may own host files."""
    uid_count: Annotated[int, pydantic.Field(ge=1)] = 65536
    run_workspaces: str = str(Path(tempfile.gettempdir()) / "tether-run-workspaces")
    """Where profiles with ``workspace = "run"`` keep each run's workspace (one directory per
    tenant and run, removed when the run ends). Every directory above it must be open to
    other users, so a sandbox's uid can mount it."""
    profiles: dict[str, Profile] = pydantic.Field(
        default_factory=lambda: {"default": DEFAULT_PROFILE})

    @pydantic.field_validator("run_workspaces")
    @classmethod
    def _absolute_root(cls, value: str) -> str:
        return _absolute((value,))[0]

    def profile(self, name: str) -> Profile:
        """The named profile; a ``ConfigError`` lists the known ones."""
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles))
            raise ConfigError(f"no sandbox profile {name!r}; known profiles: {known} "
                              "(add one as [sandbox.profiles.NAME] in tether.toml)") from None


def _explain(error: pydantic.ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"])
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def sandbox_config(table: dict[str, Any], source: str = "sandbox") -> SandboxConfig:
    """Build the sandbox config from a ``[sandbox]`` table (profiles start from ``default``)."""
    table = dict(table)
    raw_profiles = table.pop("profiles", {})
    if not isinstance(raw_profiles, dict):
        raise ConfigError(f"{source}: [sandbox.profiles] must be a table of profiles")
    profiles = {"default": DEFAULT_PROFILE}
    for name, fields in raw_profiles.items():
        if not isinstance(fields, dict):
            raise ConfigError(f"{source}: sandbox.profiles.{name} must be a table")
        try:
            profiles[name] = Profile.model_validate(
                {**DEFAULT_PROFILE.model_dump(), **fields, "name": name})
        except pydantic.ValidationError as exc:
            raise ConfigError(f"{source}: sandbox.profiles.{name}: {_explain(exc)}") from None
    try:
        return SandboxConfig.model_validate({**table, "profiles": profiles})
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{source}: sandbox.{_explain(exc)}") from None


def load_sandbox_config(path: Path | None = None) -> SandboxConfig:
    """The ``[sandbox]`` table of ``tether.toml`` (``./tether.toml`` when ``path`` is None)."""
    path = config_file(path)
    if path is None:
        return SandboxConfig()
    document = read_toml(path)
    table = document.get("sandbox", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [sandbox] must be a table")
    return sandbox_config(table, str(path))
