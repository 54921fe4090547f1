"""Servers that die: killed mid-call (the call fails with a clear error, the server is
restarted with backoff), servers that will not start, and shutdown that leaves no process."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp_support import (
    everything_http,
    everything_stdio,
    http_config,
    is_running,
    notes_stdio,
    wait_until_gone,
)

import tether
from tether.errors import MCPServerError, ToolError, UnknownTool
from tether.mcp import MCPServers, StdioServer
from tether.store import RecordState

pytestmark = pytest.mark.anyio


async def kill_when_called(servers: MCPServers, server: str, *, after: float) -> int:
    """SIGKILL the server's process ``after`` seconds from now; returns its pid."""
    pid = servers.connection(server).pid
    assert pid is not None
    await anyio.sleep(after)
    os.kill(pid, signal.SIGKILL)
    return pid


async def test_a_stdio_server_killed_mid_call_fails_the_call_and_is_restarted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    monkeypatch.setenv("NOTES_FILE", str(tmp_path / "notes.txt"))
    servers = MCPServers([notes_stdio(tools={"pid": {"side_effects": False, "max_attempts": 4}})])
    wait, pid = servers.tool("notes", "wait"), servers.tool("notes", "pid")

    @tether.agent(tools=[wait, pid])
    async def victim(ctx: tether.Context) -> dict[str, object]:
        try:
            await ctx.tool("wait", {"seconds": 10})
        except ToolError as exc:
            return {"error": exc.to_json(), "pid_after": await ctx.tool("pid")}
        return {"error": None}

    async with servers, tether.Runtime(sqlite_url) as rt:
        handle = await rt.start(victim, run_id="victim")
        first_pid = await kill_when_called(servers, "notes", after=0.3)  # the call is in flight
        with anyio.fail_after(30):
            outcome: Any = await handle.result()
        records = await rt.journal("victim")
    error = outcome["error"]
    assert error["code"] == "tool.mcp_server"
    assert error["type"] == "MCPServerError"
    assert error["message"] == ("MCP server 'notes' exited with code -9 during the call to "
                                "'wait', so its outcome is unknown; the server is being restarted")
    assert outcome["pid_after"]["result"] != first_pid
    assert servers.connection("notes").connections == 2
    assert not is_running(first_pid)
    # The failed call is on record as failed: a replay raises the same error, never re-calls.
    assert (records[0].name, records[0].state) == ("wait", RecordState.ERROR)


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_everything_killed_mid_call_is_a_clear_error_then_comes_back(
        tmp_path: Path, transport: str) -> None:
    with everything_http(tmp_path) as peer:
        config = everything_stdio() if transport == "stdio" else http_config(peer)
        async with MCPServers([config]) as servers:
            long_op = servers.tool("everything", "trigger-long-running-operation")
            connection = servers.connection("everything")
            errors: list[ToolError] = []

            async def call() -> None:
                try:
                    await connection.call(long_op.remote_name, long_op.name,
                                          {"duration": 10, "steps": 10}, None)
                except ToolError as exc:
                    errors.append(exc)

            started = time.monotonic()
            async with anyio.create_task_group() as group:
                group.start_soon(call)
                await anyio.sleep(0.3)
                if transport == "stdio":
                    await kill_when_called(servers, "everything", after=0)
                else:
                    peer.kill()
            assert time.monotonic() - started < 8  # failed at once, not at the 10 s mark
            assert len(errors) == 1
            assert isinstance(errors[0], MCPServerError)
            assert "during the call to 'trigger-long-running-operation', so its outcome is " \
                   "unknown" in errors[0].message
            if transport == "http":
                peer.start()  # the same port: the connection is made again
            with anyio.fail_after(30):
                while True:
                    try:
                        result = await connection.call("echo", "echo", {"message": "back"}, None)
                        break
                    except MCPServerError:
                        await anyio.sleep(0.1)  # down, waiting out the backoff
            assert result.content[0].text == "Echo: back"  # type: ignore[union-attr]
            assert connection.connections == 2


async def test_a_server_that_will_not_start_says_why_without_its_secrets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKEN_TOKEN", "tok-very-secret")
    script = ("import os, sys; print('cannot use token ' + os.environ['BROKEN_TOKEN'], "
              "file=sys.stderr); sys.exit(3)")
    servers = MCPServers([StdioServer(name="broken", command=sys.executable,
                                      args=("-c", script), env=("BROKEN_TOKEN",))])
    call = servers.tool("broken", "anything")
    try:
        with pytest.raises(MCPServerError) as caught:
            await servers.start()
        message = caught.value.message
        assert message.startswith("MCP server 'broken' exited with code 3 while starting (its "
                                  "stderr ends: cannot use token ***); restarting it in ")
        assert "tok-very-secret" not in message
        # While it waits to be restarted, a call fails at once instead of waiting its timeout.
        started = time.monotonic()
        with pytest.raises(MCPServerError, match="exited with code 3"):
            await servers.connection("broken").call("anything", call.name, {}, None)
        assert time.monotonic() - started < 1
    finally:
        await servers.aclose()


async def test_a_missing_program_is_named(tmp_path: Path) -> None:
    servers = MCPServers([StdioServer(name="gone", command=str(tmp_path / "no-such-server"))])
    try:
        with pytest.raises(MCPServerError, match="MCP server 'gone' could not be started: "
                                                 "FileNotFoundError"):
            await servers.start()
    finally:
        await servers.aclose()


async def test_a_tool_the_server_does_not_offer_is_an_unknown_tool() -> None:
    servers = MCPServers([everything_stdio()])
    missing = servers.tool("everything", "no-such-tool")

    @tether.agent(tools=[missing])
    async def ask(ctx: tether.Context) -> str:
        try:
            await ctx.tool("no-such-tool", {})
        except UnknownTool as exc:
            return exc.message
        return "called"

    async with tether.Runtime("memory://") as rt:
        try:
            message = await rt.run(ask)
        finally:
            await servers.aclose()
    assert str(message).startswith("MCP server 'everything' has no tool 'no-such-tool'; it "
                                   "offers: echo, ")


async def test_closing_stops_every_server_process() -> None:
    servers = MCPServers([everything_stdio(), StdioServer(
        name="time", command=str(Path(sys.executable).parent / "mcp-server-time"))])
    await servers.start()
    pids = [servers.connection(name).pid for name in servers.names]
    assert all(pid is not None and is_running(pid) for pid in pids)
    await servers.aclose()
    assert all(wait_until_gone(pid, timeout=1) for pid in pids if pid is not None)
    # A closed set of servers starts again on its next use.
    await servers.start("time")
    assert servers.connection("time").pid not in pids
    await servers.aclose()
