"""How a stdio server becomes a process: the launch hook.

A ``Launcher`` turns a server's configuration and the runtime's environment into the exact
process to start (argv, environment, working directory). The default one runs the command as
configured with only the allow-listed variables. The sandbox replaces it with one that wraps the
same process in its isolation layers (``sandbox_launcher``); everything else (pipes, shutdown,
restarts) stays here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import anyio.abc

from tether.errors import ConfigError
from tether.mcp._config import StdioServer
from tether.sandbox import SANDBOX_ENV, Profile, Sandbox

Opener = Callable[[], contextlib.AbstractAsyncContextManager[anyio.abc.Process]]
"""Starts the process itself (with pipes) and stops it, and what was made for it, on exit."""


@dataclass(frozen=True, slots=True)
class Launch:
    """The process a stdio server runs as."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False)  # values may be secrets: never in a repr
    cwd: str | None = None
    opener: Opener | None = field(default=None, repr=False)
    """How to start it when a plain process will not do (the sandbox's); None: run ``argv``."""


Launcher = Callable[[StdioServer, Mapping[str, str]], Launch]
"""``(server, runtime environment) -> Launch``: the hook the sandbox fills."""


def default_launcher(server: StdioServer, environ: Mapping[str, str]) -> Launch:
    """Run the command as configured, with the allow-listed variables and nothing else.

    Raises:
        ConfigError: the command is not found on the runtime's ``PATH``, or the server asks
            for a sandbox (fail closed: it never runs unsandboxed).
    """
    if server.sandbox is not None:
        raise ConfigError(f"MCP server {server.name!r} runs in sandbox profile "
                          f"{server.sandbox!r}, but no sandbox was given to launch it: pass "
                          "MCPServers(..., sandbox=Sandbox(...)) or use sandbox_launcher")
    command = server.command
    if os.sep not in command:
        # Looked up on the runtime's PATH, not the server's: the server may get no PATH at all.
        found = shutil.which(command, path=environ.get("PATH", os.defpath))
        if found is None:
            raise ConfigError(f"MCP server {server.name!r}: command {command!r} is not on PATH; "
                              "give its full path in `command`")
        command = found
    env = {name: environ[name] for name in server.env if name in environ}
    return Launch((command, *server.args), env, server.cwd)


def check_sandboxed(server: StdioServer, sandbox: Sandbox) -> Profile:
    """The profile a sandboxed server runs in, after checking the two fit together.

    Raises:
        ConfigError: the profile is unknown, ``env`` names a variable the profile does not
            pass in, or ``cwd`` is set.
    """
    assert server.sandbox is not None
    profile = sandbox.profile(server.sandbox)
    where = f"MCP server {server.name!r} (sandbox profile {profile.name!r})"
    if server.cwd is not None:
        raise ConfigError(f"{where}: cwd cannot be set; a sandboxed server runs in its own "
                          "/workspace")
    # The sandbox sets some variables itself (its PATH, HOME, ...); any other must be let in
    # twice, by the server's env and by the profile's, so neither alone widens the sandbox.
    refused = [name for name in server.env if name not in SANDBOX_ENV
               and name not in profile.env]
    if refused:
        raise ConfigError(f"{where}: env {', '.join(refused)} must also be in the profile's "
                          f"env to reach the sandbox (add them to [sandbox.profiles."
                          f"{profile.name}] env)")
    return profile


def sandbox_launcher(sandbox: Sandbox, fallback: Launcher = default_launcher) -> Launcher:
    """A launcher that starts servers with a ``sandbox`` profile in that sandbox profile, and
    the others with ``fallback``.

    Raises (when a server is launched):
        ConfigError: the profile is unknown, ``env`` names a variable the profile does not
            pass in, or ``cwd`` is set.
    """

    def launch(server: StdioServer, environ: Mapping[str, str]) -> Launch:
        if server.sandbox is None:
            return fallback(server, environ)
        profile = check_sandboxed(server, sandbox)
        wanted = [name for name in server.env if name not in SANDBOX_ENV]
        env = {name: environ[name] for name in wanted if name in environ}
        argv = (server.command, *server.args)
        return Launch(argv, env, None, opener=functools.partial(
            sandbox.open_process, argv, profile=profile, environ=env))

    return launch


def secret_values(launch: Launch) -> list[str]:
    """Values passed to the server that must not show up in what Tether reports about it."""
    return [value for name, value in launch.env.items()
            if len(value) >= 4 and name not in _PLAIN]


# Variables whose values are paths and terminal names, not secrets; scrubbing them would
# garble every message that mentions a path.
_PLAIN = frozenset({"PATH", "HOME", "TERM", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME",
                    "SHELL", "PWD"})
