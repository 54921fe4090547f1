"""The stdio transport: one server process, its pipes bridged to an MCP session's streams.

Why not the SDK's ``stdio_client``: it always passes ``HOME``, ``PATH``, ``SHELL``, ``TERM``,
``USER`` and ``LOGNAME`` through to the server, and the allow-list promises that nothing is
inherited that the configuration does not name. Owning the process also gives the supervisor
what it needs: the pid, the moment the server's output ends (it exited or crashed), and the tail
of its stderr for the error that says why.

Shutdown follows the MCP lifecycle: close the server's stdin, give it a moment to exit, then
SIGTERM and at last SIGKILL its whole process group (it runs in a session of its own, so
children it started go too). Every wait is bounded and shielded, so a cancelled caller can
neither leak the process nor hang on it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.os.posix.utilities import terminate_posix_process_tree
from mcp.shared.message import SessionMessage
from mcp.types import jsonrpc_message_adapter

from tether.mcp._launch import Launch, secret_values

logger = logging.getLogger("tether.mcp")

EXIT_GRACE_SECONDS = 2.0
"""How long a server may take to exit by itself once its stdin is closed."""
KILL_GRACE_SECONDS = 2.0
"""How long after SIGTERM before SIGKILL."""
STDERR_TAIL_LINES = 20


@dataclass(eq=False)
class StdioProcess:
    """A running server: the session's two streams and what is known about the process."""

    name: str
    process: anyio.abc.Process
    read_stream: MemoryObjectReceiveStream[SessionMessage | Exception]
    write_stream: MemoryObjectSendStream[SessionMessage]
    lost: anyio.Event = field(default_factory=anyio.Event)
    """Set when the server's output ended: it exited, crashed or closed its stdout."""
    stderr_tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=STDERR_TAIL_LINES))
    """The last lines the server wrote to stderr, with the values of its variables masked."""
    secrets: list[str] = field(default_factory=list, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode


@asynccontextmanager
async def open_stdio(name: str, launch: Launch) -> AsyncIterator[StdioProcess]:
    """Start the server process and bridge its pipes until the context ends.

    Raises:
        OSError: the process could not be started (no such file, not executable).
    """
    async with contextlib.AsyncExitStack() as stack:
        if launch.opener is not None:
            # The opener (the sandbox's) stops the process and cleans up after _stop below.
            process = await stack.enter_async_context(launch.opener())
        else:
            process = await anyio.open_process(list(launch.argv), env=dict(launch.env),
                                               cwd=launch.cwd, start_new_session=True)
        async with _bridged(name, launch, process) as server:
            yield server


@asynccontextmanager
async def _bridged(name: str, launch: Launch,
                   process: anyio.abc.Process) -> AsyncIterator[StdioProcess]:
    # From here on no await may come before the task group is entered, or a cancellation
    # landing in between would leak the live process.
    read_send, read_receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_send, write_receive = anyio.create_memory_object_stream[SessionMessage](0)
    server = StdioProcess(name, process, read_receive, write_send,
                          secrets=secret_values(launch))
    async with anyio.create_task_group() as group:
        group.start_soon(_read_stdout, server, read_send)
        group.start_soon(_write_stdin, server, write_receive, read_send)
        group.start_soon(_read_stderr, server)
        try:
            yield server
        finally:
            with anyio.CancelScope(shield=True):
                write_send.close()
                await _stop(server)
                read_receive.close()
            group.cancel_scope.cancel()


async def _read_stdout(server: StdioProcess,
                       send: MemoryObjectSendStream[SessionMessage | Exception]) -> None:
    stdout = server.process.stdout
    assert stdout is not None, "the process is started with pipes"
    buffer = b""
    try:
        async with send:
            async for chunk in stdout:
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        await send.send(_parse(server.name, line))
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
        pass  # our own shutdown closed a stream under us
    finally:
        server.lost.set()


def _parse(name: str, line: bytes) -> SessionMessage | Exception:
    """One line of the server's stdout; a malformed one goes to the session as an error."""
    try:
        return SessionMessage(jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        logger.warning("MCP server %s wrote a line that is not JSON-RPC: %.200r", name, line)
        return exc


async def _write_stdin(server: StdioProcess, receive: MemoryObjectReceiveStream[SessionMessage],
                       read_send: MemoryObjectSendStream[SessionMessage | Exception]) -> None:
    stdin = server.process.stdin
    assert stdin is not None, "the process is started with pipes"
    try:
        async with receive:
            async for message in receive:
                data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                await stdin.send(data.encode() + b"\n")
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
        # The server stopped reading: end the session's stream so no request waits forever.
        server.lost.set()
        read_send.close()
    finally:
        with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await stdin.aclose()


async def _read_stderr(server: StdioProcess) -> None:
    stderr = server.process.stderr
    assert stderr is not None, "the process is started with pipes"
    buffer = b""
    with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
        async for chunk in stderr:
            *lines, buffer = (buffer + chunk).split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip()
                for secret in server.secrets:  # a server may print what it was given
                    line = line.replace(secret, "***")
                if line:
                    server.stderr_tail.append(line)
                    logger.info("MCP server %s: %s", server.name, line)


async def _stop(server: StdioProcess) -> None:
    process = server.process
    if process.stdin is not None:
        with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await process.stdin.aclose()
    if not await wait_exited(process, EXIT_GRACE_SECONDS):
        await terminate_posix_process_tree(process, KILL_GRACE_SECONDS)
        if not await wait_exited(process, KILL_GRACE_SECONDS):
            logger.error("MCP server %s (pid %d) survived SIGKILL", server.name, process.pid)
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await pipe.aclose()
    # The asyncio transport stays open (and warns when collected) until closed by hand.
    transport = getattr(getattr(process, "_process", None), "_transport", None)
    close = getattr(transport, "close", None)
    if callable(close):
        with suppress(ProcessLookupError, PermissionError):
            close()


async def wait_exited(process: anyio.abc.Process, timeout_seconds: float) -> bool:
    """Whether the process exits within ``timeout_seconds``."""
    # Polls returncode rather than process.wait(): on asyncio, wait() also waits for the pipes
    # to close, and a grandchild that inherited them would make an exited server look hung.
    with anyio.move_on_after(timeout_seconds):
        while process.returncode is None:  # noqa: ASYNC110 - no event exists to wait on
            await anyio.sleep(0.01)
    return process.returncode is not None
