"""One MCP server's long-lived session, kept alive by a supervisor task.

The supervisor connects (launch or dial, ``initialize``, list the tools), then waits until the
connection is lost; it then reconnects with backoff (0.25 s, doubling, at most 30 s) for as long
as the connection object is open. Calls from any run use the current session concurrently
(JSON-RPC matches replies to requests). A call that finds the server down fails at once with
``MCPServerError`` instead of waiting out its timeout; a call in flight when the server goes
away fails with ``MCPServerError`` too, saying its outcome is unknown.

The supervisor is an asyncio task of its own, not a child of a task group, because it is
started lazily by the first call (inside some run's task) and must outlive that run: the runtime
launches runs the same way. ``aclose`` keeps the structured guarantee by hand: it cancels the
task through an anyio cancel scope (so the shutdown of the process, which is shielded, runs to
its end) and waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import httpx2
import mcp.types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError

from tether import __version__
from tether.errors import ConfigError, MCPServerError, TetherError, ToolError, UnknownTool
from tether.mcp._config import HTTPServer, ServerConfig, StdioServer
from tether.mcp._launch import Launcher, secret_values
from tether.mcp._stdio import StdioProcess, open_stdio, wait_exited

logger = logging.getLogger("tether.mcp")

RESTART_INITIAL_SECONDS = 0.25
RESTART_MAX_SECONDS = 30.0
HTTP_CONNECT_SECONDS = 30.0
HTTP_READ_SECONDS = 300.0  # a response stream may stay open while a long tool runs


class ServerConnection:
    """The session with one server: started on first use, restarted when lost."""

    def __init__(self, config: ServerConfig, *, launcher: Launcher,
                 environ: Mapping[str, str] | None) -> None:
        self.config = config
        self._launcher = launcher
        self._environ = environ
        self._task: asyncio.Task[None] | None = None
        self._scope: anyio.CancelScope | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Invariant: _session is set exactly while a connection is up and its tools listed.
        self._session: ClientSession | None = None
        self._tools: dict[str, mcp.types.Tool] = {}
        self._process: StdioProcess | None = None
        self._lost: anyio.Event | None = None
        self._connecting = False
        self._error: MCPServerError | None = None
        self._changed: anyio.Event | None = None
        self._secrets: list[str] = []  # header and env values: scrubbed from what we report
        self.connections = 0
        """How many times a connection came up (1 + restarts)."""

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def pid(self) -> int | None:
        """The server process while one runs (stdio servers only)."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    def listed(self, tool: str) -> mcp.types.Tool | None:
        """The tool as the server last listed it (None before the first listing)."""
        return self._tools.get(tool)

    @property
    def tool_names(self) -> list[str]:
        return list(self._tools)

    # -- lifecycle -------------------------------------------------------------------------

    async def ready(self) -> ClientSession:
        """The live session, starting the server if need be.

        Raises:
            MCPServerError: the server would not start, or is down and waiting to be restarted.
        """
        self._ensure_supervisor()
        while True:
            if self._session is not None:
                return self._session
            if not self._connecting and self._error is not None:
                error = self._error
                raise MCPServerError(error.tool, error.message, error_type=error.error_type)
            assert self._changed is not None
            await self._changed.wait()

    def _ensure_supervisor(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is not None and self._loop is loop and not self._task.done():
            return
        # First use, or first use in a new event loop (the old loop's task died with it).
        self._loop = loop
        self._session, self._process, self._error = None, None, None
        self._connecting = True
        self._changed = anyio.Event()
        # See the module docstring for why this is a bare task.
        self._task = loop.create_task(self._supervise(), name=f"tether.mcp:{self.name}")

    async def aclose(self) -> None:
        """Stop the session and the server process (and wait until they are gone)."""
        task, scope = self._task, self._scope
        self._task = self._scope = None
        if task is None or task.done():
            return
        if self._loop is not asyncio.get_running_loop():
            return  # that loop is gone, and its tasks with it
        if scope is not None:
            scope.cancel()
        else:  # not yet running: it has not entered its scope
            task.cancel()
        with anyio.CancelScope(shield=True):
            # asyncio.wait, not await task: cancelling the waiter must not cancel the task.
            await asyncio.wait([task])

    async def _supervise(self) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            failures = 0
            while True:
                self._connecting = True
                try:
                    async with self._connect():
                        failures = 0
                        assert self._lost is not None
                        await self._lost.wait()
                    error = self._lost_error(None)
                except Exception as exc:  # noqa: BLE001 - any failure is reported, then retried
                    error = (self._lost_error(exc) if self._session is not None
                             else self._failure(exc))
                finally:
                    self._session, self._lost = None, None
                failures += 1
                delay = min(RESTART_MAX_SECONDS, RESTART_INITIAL_SECONDS * 2 ** (failures - 1))
                self._error = MCPServerError("", f"{error}; restarting it in {delay:g} s",
                                             error_type="MCPServerDown")
                self._connecting = False
                self._notify()
                logger.warning("%s; restarting it in %g s", error, delay)
                self._process = None
                await anyio.sleep(delay)

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        if changed is not None:
            changed.set()

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[None]:
        config = self.config
        me = mcp.types.Implementation(name="tether", version=__version__)
        async with contextlib.AsyncExitStack() as stack:
            if isinstance(config, StdioServer):
                environ = os.environ if self._environ is None else self._environ
                launch = self._launcher(config, environ)
                self._secrets = secret_values(launch)
                process = await stack.enter_async_context(open_stdio(self.name, launch))
                self._process = process
                lost = process.lost
                session = await stack.enter_async_context(ClientSession(
                    process.read_stream, process.write_stream, client_info=me))
            else:
                client = await stack.enter_async_context(httpx2.AsyncClient(
                    headers=self._headers(config),
                    timeout=httpx2.Timeout(HTTP_CONNECT_SECONDS, read=HTTP_READ_SECONDS)))
                read, write = await stack.enter_async_context(
                    streamable_http_client(config.url, http_client=client))
                lost = anyio.Event()  # set by a call that finds the connection gone
                session = await stack.enter_async_context(ClientSession(read, write,
                                                                        client_info=me))
            with anyio.fail_after(config.startup_timeout):
                await session.initialize()
                self._tools = await _list_tools(session)
            self._session, self._lost = session, lost
            self.connections += 1
            self._error, self._connecting = None, False
            self._notify()
            logger.info("MCP server %s is up (%d tools)", self.name, len(self._tools))
            yield

    def _headers(self, config: HTTPServer) -> dict[str, str]:
        environ = os.environ if self._environ is None else self._environ
        headers = {}
        for header, variable in config.headers.items():
            if variable not in environ:
                raise ConfigError(f"MCP server {self.name!r}: header {header} takes its value "
                                  f"from the environment variable {variable}, which is not set")
            headers[header] = environ[variable]
        self._secrets = list(headers.values())
        return headers

    # -- calls -----------------------------------------------------------------------------

    async def call(self, tool: str, tether_name: str, arguments: dict[str, Any],
                   progress: ProgressFnT | None) -> mcp.types.CallToolResult:
        """Call a tool on the server.

        Raises:
            MCPServerError: the server is down, or went away during the call.
            UnknownTool: the server does not offer the tool (any more).
            ToolError: the server refused the request (a JSON-RPC error).
        """
        try:
            session = await self.ready()
        except MCPServerError as exc:
            raise MCPServerError(tether_name, exc.message, error_type=exc.error_type) from None
        if tool not in self._tools:
            raise UnknownTool(tether_name, f"MCP server {self.name!r} has no tool {tool!r}; it "
                                           f"offers: {', '.join(sorted(self._tools)) or 'none'}")
        lost = self._lost
        try:
            result = await session.call_tool(tool, arguments, progress_callback=progress)
        except MCPError as exc:
            if exc.code == mcp.types.CONNECTION_CLOSED:
                raise await self._went_away(tether_name, tool, lost) from None
            raise ToolError(tether_name, f"MCP server {self.name!r} refused the call to "
                                         f"{tool!r}: {self._scrub(exc.message)} (JSON-RPC error "
                                         f"{exc.code})", error_type="MCPError") from None
        except (httpx2.HTTPError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise await self._went_away(tether_name, tool, lost) from None
        except TetherError:
            raise
        except RuntimeError as exc:  # the SDK's word for a result it cannot hand back
            raise ToolError(tether_name, f"MCP server {self.name!r} answered {tool!r} with "
                                         f"something Tether cannot use: {exc}",
                            error_type="MCPError") from None
        if not isinstance(result, mcp.types.CallToolResult):
            raise ToolError(tether_name, f"MCP server {self.name!r} answered {tool!r} with a "
                                         f"{type(result).__name__}, not a tool result",
                            error_type="MCPError")
        if self._secrets:
            # A server may echo its environment or headers back: what it was given in
            # confidence must not reach the model or the journal through its answers.
            result = mcp.types.CallToolResult.model_validate(
                self._scrub_json(result.model_dump(mode="json", by_alias=True)))
        return result

    async def _went_away(self, tether_name: str, tool: str,
                         lost: anyio.Event | None) -> MCPServerError:
        if lost is not None:
            lost.set()  # an HTTP connection has no other way to tell the supervisor
        process = self._process
        how = "went away"
        if process is not None and await wait_exited(process.process, 1.0):
            how = f"exited with code {process.returncode}"
        return MCPServerError(tether_name, f"MCP server {self.name!r} {how} during the call to "
                                           f"{tool!r}, so its outcome is unknown; the server is "
                                           "being restarted", error_type="MCPServerLost")

    # -- describing failures ---------------------------------------------------------------

    def _lost_error(self, exc: BaseException | None) -> str:
        """Why a connection that was up ended, as one sentence without secrets."""
        process = self._process
        if process is not None:
            code = process.returncode
            what = (f"exited with code {code}" if code is not None else "closed its output")
            return self._scrub(f"MCP server {self.name!r} {what}{self._stderr_hint(process)}")
        reason = f": {_one_line(exc)}" if exc is not None else ""
        return self._scrub(f"MCP server {self.name!r} lost its connection{reason}")

    def _failure(self, exc: BaseException) -> str:
        """Why connecting failed, as one sentence without secrets."""
        process = self._process
        exc = _innermost(exc)
        if isinstance(exc, TetherError):
            return self._scrub(exc.message)
        if isinstance(exc, TimeoutError):
            what = f"did not start within {self.config.startup_timeout:g} s"
        elif isinstance(exc, OSError) and process is None:
            what = f"could not be started: {type(exc).__name__}: {exc.strerror or exc}"
        elif isinstance(exc, MCPError) and process is not None and process.returncode is not None:
            what = f"exited with code {process.returncode} while starting"
        else:
            what = f"failed to connect: {_one_line(exc)}"
        hint = self._stderr_hint(process) if process is not None else ""
        return self._scrub(f"MCP server {self.name!r} {what}{hint}")

    def _stderr_hint(self, process: StdioProcess) -> str:
        tail = list(process.stderr_tail)[-3:]
        return f" (its stderr ends: {' | '.join(tail)})" if tail else ""

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _scrub_json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, list):
            return [self._scrub_json(item) for item in value]
        if isinstance(value, dict):
            return {key: self._scrub_json(item) for key, item in value.items()}
        return value


def _innermost(exc: BaseException) -> BaseException:
    # Transports fail from inside task groups: show the one error, not the group around it.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _one_line(exc: BaseException) -> str:
    exc = _innermost(exc)
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


async def _list_tools(session: ClientSession) -> dict[str, mcp.types.Tool]:
    tools: dict[str, mcp.types.Tool] = {}
    cursor: str | None = None
    while True:
        page = await session.list_tools(
            params=None if cursor is None else mcp.types.PaginatedRequestParams(cursor=cursor))
        tools.update((tool.name, tool) for tool in page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools
