"""MCP server configuration: the ``[mcp.servers.NAME]`` tables of ``tether.toml``, and the same
declarations in code (``StdioServer(...)``, ``HTTPServer(...)``).

Secrets never appear here: ``env`` lists the *names* of variables passed through from the
runtime's environment, and ``headers`` maps each HTTP header to the *name* of the variable that
holds its value. Values are read when the server is launched, and never echoed in an error
(someone may have pasted the secret itself where a name belongs).
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from tether.config import config_file, read_toml
from tether.errors import ConfigError

TRANSPORTS: tuple[str, ...] = ("stdio", "http")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SERVER_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_NOT_A_NAME = ("must be the NAME of an environment variable (letters, digits and _), not a "
               "value: put the secret in an environment variable and name that variable here")


# Where the table being validated came from ("tether.toml: mcp.servers.git"), for errors.
_SOURCE: contextvars.ContextVar[str | None] = contextvars.ContextVar("_SOURCE", default=None)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ToolOptions(_Strict):
    """Settings of one tool of a server (``[mcp.servers.NAME.tools.TOOL]``); each one left
    unset takes the server's."""

    timeout: float | None = Field(default=None, gt=0)
    """Seconds one call may take; then it is cancelled (and the server told)."""
    side_effects: bool | None = None
    """Whether the tool changes the world (its intent is made durable before it runs)."""
    idempotent: bool | None = None
    """Whether calling it twice is safe; such a call interrupted by a crash is retried."""
    max_attempts: int | None = Field(default=None, ge=1)
    """Attempts per call, the first included, for failures worth another try."""
    region: str | None = None
    """Where the tool sends data, for residency rules (a label)."""


class _Server(_Strict):
    def __init__(self, **data: Any) -> None:
        # Pydantic calls an overridden __init__ for model_validate too, so a mistake in code
        # and one in tether.toml both become a ConfigError saying where it is.
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            where = _SOURCE.get() or f"{type(self).__name__}(name={data.get('name')!r})"
            raise _config_error(where, (), exc, type(self)) from None

    name: str = Field(pattern=f"^{_SERVER_NAME.pattern}$")
    """How code and journals name the server."""
    prefix: str = ""
    """Put before each tool's name as agents and models see it (``git_`` → ``git_git_status``),
    so two servers with a tool of the same name can serve one agent."""
    timeout: float = Field(default=60.0, gt=0)
    """Seconds one tool call may take; then it is cancelled (and the server told)."""
    startup_timeout: float = Field(default=30.0, gt=0)
    """Seconds the server may take to start, initialize and list its tools."""
    side_effects: bool = True
    """Whether its tools change the world (the default: they do, so a crash never repeats one
    silently). Set false for read-only servers, or per tool."""
    idempotent: bool = False
    """Whether calling its tools twice is safe."""
    max_attempts: int = Field(default=1, ge=1)
    """Attempts per call, the first included: a timeout or a server that went away is tried
    again (with backoff) up to this many times. An error the tool returned is not."""
    max_concurrency: int | None = Field(default=None, ge=1)
    """Most calls in flight to this server's tools at once, per tool, in one process."""
    region: str | None = None
    """Where the server runs, for residency rules (a label; Tether does not route by it)."""
    tools: dict[str, ToolOptions] = Field(default_factory=dict)
    """Per-tool settings, by the tool's name on the server."""

    def options_for(self, tool: str) -> ToolOptions:
        """The settings of one tool, the server's filling what the tool leaves unset."""
        own = self.tools.get(tool, ToolOptions())
        return ToolOptions(
            timeout=own.timeout if own.timeout is not None else self.timeout,
            side_effects=own.side_effects if own.side_effects is not None else self.side_effects,
            idempotent=own.idempotent if own.idempotent is not None else self.idempotent,
            max_attempts=own.max_attempts or self.max_attempts,
            region=own.region or self.region)


class StdioServer(_Server):
    """A server Tether starts as a process and talks to over its stdin and stdout.

    The process gets only the variables named in ``env``, with their values from the runtime's
    environment (a name that is not set there is left out); nothing else is inherited, not even
    ``PATH``: list it when the server needs it (a ``#!/usr/bin/env node`` script does).
    ``command`` itself is looked up on the runtime's ``PATH``.
    """

    transport: Literal["stdio"] = "stdio"
    command: str = Field(min_length=1)
    """The program to run (a path, or a name looked up on ``PATH``)."""
    args: tuple[str, ...] = ()
    """Its arguments."""
    env: tuple[str, ...] = ()
    """Names of the variables passed through from the runtime's environment."""
    cwd: str | None = None
    """Its working directory (default: the runtime's)."""
    sandbox: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    """A sandbox profile to run the server in (``[sandbox.profiles.NAME]``, or ``default``):
    an unprivileged uid, its own namespaces with no network (or the profile's allow-list),
    seccomp and the profile's limits. Its environment is the sandbox's plus the variables of
    ``env``, each of which the profile's ``env`` must list too; ``command`` is looked up on
    the sandbox's ``PATH``, and a path outside ``/usr`` must be in the profile's
    ``read_only``. It runs in a fresh ``/workspace``, so ``cwd`` cannot be set."""

    @pydantic.field_validator("env")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not all(_ENV_NAME.fullmatch(name) for name in value):
            raise ValueError("each entry " + _NOT_A_NAME)
        return value


class HTTPServer(_Server):
    """A server already running, reached over streamable HTTP (``http://host:port/mcp``)."""

    transport: Literal["http"] = "http"
    url: str
    """The server's MCP endpoint."""
    headers: dict[str, str] = Field(default_factory=dict)
    """HTTP header name → name of the environment variable holding its value
    (``{Authorization = "NOTES_AUTH"}``); a variable that is not set fails the connection."""

    @pydantic.field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @pydantic.field_validator("headers")
    @classmethod
    def _header_variables(cls, value: dict[str, str]) -> dict[str, str]:
        for header, variable in value.items():
            if not _HEADER_NAME.fullmatch(header):
                raise ValueError(f"{header!r} is not an HTTP header name")
            if not _ENV_NAME.fullmatch(variable):
                raise ValueError(f"the value of header {header} " + _NOT_A_NAME)
        return value


ServerConfig = StdioServer | HTTPServer


def load_mcp_servers(path: Path | None = None) -> dict[str, ServerConfig]:
    """The ``[mcp.servers.NAME]`` tables of a ``tether.toml``.

    Args:
        path: the file; when None, ``./tether.toml`` is read if it exists (no servers if not).

    Raises:
        ConfigError: naming the file, the key, and what is allowed.
    """
    path = config_file(path)
    if path is None:
        return {}
    document = read_toml(path)
    section = document.get("mcp", {})
    if not isinstance(section, dict) or set(section) - {"servers"}:
        raise ConfigError(f"{path}: [mcp] holds only server tables like [mcp.servers.files]")
    servers = section.get("servers", {})
    if not isinstance(servers, dict):
        raise ConfigError(f"{path}: mcp.servers must be tables like [mcp.servers.files]")
    return {name: parse_server(name, table, source=str(path)) for name, table in servers.items()}


def parse_server(name: str, table: object, *, source: str) -> ServerConfig:
    """One ``[mcp.servers.NAME]`` table as a server configuration."""
    where = f"{source}: mcp.servers.{name}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table with transport = "
                          f"{' or '.join(repr(t) for t in TRANSPORTS)}")
    if "name" in table:
        raise ConfigError(f"{where}.name: unknown key; the table's name ({name!r}) names the "
                          "server")
    transport = table.get("transport")
    model: type[ServerConfig]
    if transport == "stdio":
        model = StdioServer
    elif transport == "http":
        model = HTTPServer
    else:
        got = "is missing" if transport is None else f"is {transport!r}"
        raise ConfigError(f"{where}.transport {got}; allowed: "
                          f"{', '.join(repr(t) for t in TRANSPORTS)} (stdio: a process Tether "
                          "starts; http: a streamable-HTTP server at a url)")
    token = _SOURCE.set(f"{source}: mcp.servers.{name}")
    try:
        return model.model_validate({**table, "name": name})
    finally:
        _SOURCE.reset(token)


def _config_error(where: str, prefix: tuple[str, ...], exc: pydantic.ValidationError,
                  model: type[BaseModel]) -> ConfigError:
    problems = []
    for error in exc.errors(include_url=False):
        loc = (*prefix, *(str(part) for part in error["loc"]))
        key = ".".join(loc)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(name for name in _model_at(model, loc[:-1]).model_fields
                                if name != "name")
            problems.append(f"{where}.{key}: unknown key; allowed: {allowed}")
        elif error["type"] == "missing":
            problems.append(f"{where}: {key} is required")
        elif loc[:1] in (("env",), ("headers",)):
            problems.append(f"{where}.{key}: {message}")  # never echo: it may be a secret
        else:
            problems.append(f"{where}.{key}: {message}, not {error['input']!r}")
    return ConfigError("; ".join(problems))


def _model_at(model: type[BaseModel], loc: tuple[str, ...]) -> type[BaseModel]:
    # tools.TOOL.<key> is the only nesting there is.
    return ToolOptions if len(loc) == 2 and loc[0] == "tools" else model


def describe_servers(servers: Mapping[str, ServerConfig]) -> str:
    """The configured servers' names, for error messages."""
    return ", ".join(sorted(servers)) or "none (declare one in code or in [mcp.servers.NAME])"
