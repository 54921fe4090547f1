"""``MCPServers``: the MCP servers a process uses, and their tools as Tether tools."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

import anyio

from tether.errors import ConfigError, MCPServerError
from tether.mcp._config import ServerConfig, StdioServer, describe_servers, load_mcp_servers
from tether.mcp._connection import ServerConnection
from tether.mcp._launch import (
    Launcher,
    check_sandboxed,
    default_launcher,
    sandbox_launcher,
)
from tether.mcp._tool import MCPTool
from tether.sandbox import Sandbox, load_sandbox_config


class MCPServers:
    """A set of MCP servers, each with one long-lived session, and their tools.

    Declare the tools an agent may call when you define it; the servers start when first
    needed (a tool call, ``start()`` or ``async with``), stay up, and are restarted with
    backoff if they go away::

        servers = MCPServers.from_config()               # [mcp.servers.NAME] in ./tether.toml
        now = servers.tool("time", "get_current_time")   # a tether Tool

        @tether.agent(tools=[now])
        async def clock(ctx: tether.Context, question: str) -> str:
            await servers.start()                        # the model needs the tools' schemas
            return await ToolLoop(model, tools=[now]).run(ctx, question)

    Args:
        servers: server configurations (``StdioServer``, ``HTTPServer``).
        launcher: turns a stdio server's configuration into the process to start (the
            sandbox's hook); by default the command runs with only the allow-listed variables.
        environ: where allow-listed variables and header values come from (default: the
            process environment, read at each launch).
        sandbox: runs the stdio servers that name a ``sandbox`` profile (default: one with the
            ``[sandbox]`` profiles of ``./tether.toml``, made when some server needs it).
    """

    def __init__(self, servers: Iterable[ServerConfig] = (), *,
                 launcher: Launcher = default_launcher,
                 environ: Mapping[str, str] | None = None,
                 sandbox: Sandbox | None = None) -> None:
        servers = list(servers)
        if sandbox is None and any(isinstance(config, StdioServer) and config.sandbox
                                   for config in servers):
            sandbox = Sandbox(load_sandbox_config())
        if sandbox is not None:
            for config in servers:  # a mistake shows now, not as a server that keeps failing
                if isinstance(config, StdioServer) and config.sandbox is not None:
                    check_sandboxed(config, sandbox)
            launcher = sandbox_launcher(sandbox, launcher)
        self._connections: dict[str, ServerConnection] = {}
        for config in servers:
            if config.name in self._connections:
                raise ConfigError(f"two MCP servers are named {config.name!r}")
            self._connections[config.name] = ServerConnection(config, launcher=launcher,
                                                              environ=environ)
        self._tools: dict[tuple[str, str], MCPTool] = {}

    @classmethod
    def from_config(cls, path: Path | str | None = None, *, launcher: Launcher = default_launcher,
                    environ: Mapping[str, str] | None = None,
                    sandbox: Sandbox | None = None) -> MCPServers:
        """The servers of a ``tether.toml`` (``./tether.toml`` when no path is given); servers
        with a ``sandbox`` profile run in that file's ``[sandbox]`` profiles unless a
        ``sandbox`` is given."""
        file = None if path is None else Path(path)
        servers = load_mcp_servers(file)
        if sandbox is None and any(isinstance(config, StdioServer) and config.sandbox
                                   for config in servers.values()):
            sandbox = Sandbox(load_sandbox_config(file))
        return cls(servers.values(), launcher=launcher, environ=environ, sandbox=sandbox)

    @property
    def names(self) -> list[str]:
        """The names of the servers."""
        return list(self._connections)

    def connection(self, server: str) -> ServerConnection:
        """The session holder of one server (its ``pid``, how often it ``connections``)."""
        found = self._connections.get(server)
        if found is None:
            raise ConfigError(f"no MCP server named {server!r}; servers: "
                              + describe_servers({name: c.config for name, c in
                                                  self._connections.items()}))
        return found

    def tool(self, server: str, name: str) -> MCPTool:
        """The tool ``name`` of ``server``, to give an agent (no I/O: usable at import time).

        Its schema is known once the server has started; a server that turns out not to offer
        it fails ``start()`` (and any call) with a message listing what it does offer.
        """
        key = (server, name)
        found = self._tools.get(key)
        if found is None:
            found = self._tools[key] = MCPTool(self.connection(server), name)
        return found

    async def tools(self, server: str) -> list[MCPTool]:
        """Every tool the server offers (starting it if need be)."""
        await self.start(server)
        return [self.tool(server, name) for name in self.connection(server).tool_names]

    async def start(self, *servers: str) -> None:
        """Start these servers (all when none are named) and list their tools; returns at once
        for servers already up. Checks every tool declared with ``tool()`` exists.

        Raises:
            MCPServerError: a server would not start (the message says why).
            ConfigError: a declared tool is not offered by its server.
        """
        connections = [self.connection(name) for name in servers or self.names]
        failures: list[str] = []

        async def start_one(connection: ServerConnection) -> None:
            try:
                await connection.ready()
            except MCPServerError as exc:
                failures.append(exc.message)

        async with anyio.create_task_group() as group:
            for connection in connections:
                group.start_soon(start_one, connection)
        if failures:
            raise MCPServerError("", "; ".join(failures), error_type="MCPServerDown")
        for (server, name), tool in self._tools.items():
            connection = self._connections[server]
            if connection in connections and connection.listed(name) is None:
                raise ConfigError(
                    f"MCP server {server!r} has no tool {name!r} (declared as {tool.name!r}); "
                    f"it offers: {', '.join(sorted(connection.tool_names)) or 'none'}")

    async def aclose(self) -> None:
        """Stop every server; no process is left behind."""
        with anyio.CancelScope(shield=True):
            for connection in self._connections.values():
                await connection.aclose()

    async def __aenter__(self) -> MCPServers:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

