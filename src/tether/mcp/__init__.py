"""MCP tool sources: the tools of Model Context Protocol servers as Tether tools.

Layout: ``_config.py`` (``[mcp.servers.NAME]`` tables and their code twins ``StdioServer``,
``HTTPServer``), ``_launch.py`` (the launch hook: a stdio server's configuration → the process
to start), ``_stdio.py`` (the process and its pipes), ``_connection.py`` (one server's
long-lived session: lazy start, restart with backoff, calls), ``_tool.py`` (``MCPTool``, a
``tether.Tool`` whose schema the server lists), ``_servers.py`` (``MCPServers``, the public
entry point). Built on the official ``mcp`` SDK (2.x), installed with ``tether[mcp]``.
"""

from tether.mcp._config import (
    HTTPServer,
    ServerConfig,
    StdioServer,
    ToolOptions,
    load_mcp_servers,
)
from tether.mcp._launch import Launch, Launcher, default_launcher, sandbox_launcher
from tether.mcp._servers import MCPServers
from tether.mcp._tool import MCPTool

__all__ = ["HTTPServer", "Launch", "Launcher", "MCPServers", "MCPTool", "ServerConfig",
           "StdioServer", "ToolOptions", "default_launcher", "load_mcp_servers",
           "sandbox_launcher"]
