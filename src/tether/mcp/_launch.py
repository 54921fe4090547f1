"""How a stdio server becomes a process: the launch hook.

A ``Launcher`` turns a server's configuration and the runtime's environment into the exact
process to start (argv, environment, working directory). The default one runs the command as
configured with only the allow-listed variables. The sandbox replaces it with one that wraps the
same process in its isolation layers; everything else (pipes, shutdown, restarts) stays here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tether.errors import ConfigError
from tether.mcp._config import StdioServer


@dataclass(frozen=True, slots=True)
class Launch:
    """The process a stdio server runs as."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False)  # values may be secrets: never in a repr
    cwd: str | None = None


Launcher = Callable[[StdioServer, Mapping[str, str]], Launch]
"""``(server, runtime environment) -> Launch``: the hook the sandbox fills."""


def default_launcher(server: StdioServer, environ: Mapping[str, str]) -> Launch:
    """Run the command as configured, with the allow-listed variables and nothing else.

    Raises:
        ConfigError: the command is not found on the runtime's ``PATH``.
    """
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


def secret_values(launch: Launch) -> list[str]:
    """Values passed to the server that must not show up in what Tether reports about it."""
    return [value for name, value in launch.env.items()
            if len(value) >= 4 and name not in _PLAIN]


# Variables whose values are paths and terminal names, not secrets; scrubbing them would
# garble every message that mentions a path.
_PLAIN = frozenset({"PATH", "HOME", "TERM", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME",
                    "SHELL", "PWD"})
