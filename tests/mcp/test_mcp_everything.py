"""The reference server of every MCP feature (``@modelcontextprotocol/server-everything``),
over stdio and over streamable HTTP: list, call, timeouts, progress events, and (stdio) the
environment allow-list."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp_support import everything_http, everything_stdio, http_config

import tether
from tether.errors import MCPServerError, ToolArgumentError, ToolTimeout
from tether.mcp import HTTPServer, MCPServers
from tether.runtime import Event
from tether.store import RecordState

pytestmark = pytest.mark.anyio


@dataclass
class Everything:
    servers: MCPServers
    transport: str


@pytest.fixture(params=["stdio", "http"])
async def everything(request: pytest.FixtureRequest, tmp_path: Path,
                     ) -> AsyncIterator[Everything]:
    options = {"side_effects": False, "tools": {"trigger-long-running-operation": {"timeout": 1}}}
    if request.param == "stdio":
        async with MCPServers([everything_stdio(**options)]) as servers:
            yield Everything(servers, "stdio")
        return
    with everything_http(tmp_path) as peer:
        async with MCPServers([http_config(peer, **options)]) as servers:
            yield Everything(servers, "http")


def agent_with(servers: MCPServers, *names: str) -> list[tether.Tool]:
    return [servers.tool("everything", name) for name in names]


async def test_every_tool_is_listed_with_its_schema(everything: Everything) -> None:
    tools = {tool.name: tool for tool in await everything.servers.tools("everything")}
    assert {"echo", "get-sum", "get-env", "trigger-long-running-operation"} <= set(tools)
    assert tools["get-sum"].spec.parameters["required"] == ["a", "b"]
    assert "$schema" not in tools["get-sum"].spec.parameters


async def test_a_call_returns_the_servers_answer_and_is_journaled(everything: Everything) -> None:
    tools = agent_with(everything.servers, "get-sum", "get-structured-content")

    @tether.agent(tools=tools)
    async def add(ctx: tether.Context, a: int, b: int) -> list[object]:
        return [await ctx.tool("get-sum", {"a": a, "b": b}),
                await ctx.tool("get-structured-content", {"location": "Chicago"})]

    async with tether.Runtime("memory://") as rt:
        result: Any = await rt.run(add, {"a": 2, "b": 40}, run_id="sum")
        total, weather = result
        records = await rt.journal("sum")
    assert total == "The sum of 2 and 40 is 42."
    assert set(weather) == {"temperature", "conditions", "humidity"}  # the structured content
    assert [(r.name, r.state) for r in records] == [("get-sum", RecordState.OK),
                                                    ("get-structured-content", RecordState.OK)]
    assert json.loads(records[0].value or "") == total


async def test_bad_arguments_are_refused_before_the_call(everything: Everything) -> None:
    tools = agent_with(everything.servers, "get-sum")

    @tether.agent(tools=tools)
    async def add(ctx: tether.Context) -> object:
        return await ctx.tool("get-sum", {"a": "two", "b": 40})

    async with tether.Runtime("memory://") as rt:
        with pytest.raises(tether.errors.RunFailed) as caught:
            await rt.run(add)
    assert caught.value.error is not None
    assert caught.value.error["code"] == ToolArgumentError.code
    assert "a: 'two' is not of type 'number'" in caught.value.error["message"]


async def test_a_call_past_its_timeout_is_cancelled_and_the_session_goes_on(
        everything: Everything) -> None:
    tools = agent_with(everything.servers, "trigger-long-running-operation", "echo")

    @tether.agent(tools=tools)
    async def slow(ctx: tether.Context) -> dict[str, object]:
        started = time.monotonic()
        try:
            await ctx.tool("trigger-long-running-operation", {"duration": 10, "steps": 10})
        except ToolTimeout as exc:
            waited = time.monotonic() - started
            return {"error": exc.to_json(), "waited": waited,
                    "after": await ctx.tool("echo", {"message": "still here"})}
        return {"error": None}

    async with tether.Runtime("memory://") as rt:
        outcome: Any = await rt.run(slow)
    assert outcome["error"]["code"] == "tool.timeout"
    assert outcome["waited"] < 5  # cancelled, not waited out
    assert outcome["after"] == "Echo: still here"
    assert everything.servers.connection("everything").connections == 1  # no reconnect needed


async def test_progress_notifications_become_events(everything: Everything) -> None:
    tools = agent_with(everything.servers, "trigger-long-running-operation")

    @tether.agent(tools=tools)
    async def work(ctx: tether.Context) -> object:
        return await ctx.tool("trigger-long-running-operation", {"duration": 0.4, "steps": 4})

    events: list[Event] = []
    async with tether.Runtime("memory://") as rt, rt.events.subscribe() as subscription:
        handle = await rt.start(work, run_id="progress")
        result = await handle.result()
        with anyio.move_on_after(0.5):
            async for event in subscription:
                events.append(event)
                if event.type == "run.completed":
                    break
    assert "Long running operation completed" in str(result)
    progress = [event.data for event in events if event.type == "tool.progress"]
    assert [(p["progress"], p["total"]) for p in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(p["name"] == "trigger-long-running-operation" and p["seq"] == 1
               for p in progress)
    types = [event.type for event in events]
    assert types.index("tool.started") < types.index("tool.progress") < types.index(
        "tool.finished")


async def test_the_server_sees_only_allow_listed_variables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_TEST_SECRET_TOKEN", "sk-do-not-leak-1234")
    monkeypatch.setenv("ALLOWED_SETTING", "visible")
    servers = MCPServers([everything_stdio(env=("PATH", "ALLOWED_SETTING"))])
    get_env = servers.tool("everything", "get-env")

    @tether.agent(tools=[get_env])
    async def env(ctx: tether.Context) -> str:
        return str(await ctx.tool("get-env", {}))

    async with servers, tether.Runtime("memory://") as rt:
        shown = json.loads(str(await rt.run(env)))
    assert set(shown) == {"PATH", "ALLOWED_SETTING"}  # not HOME, not the secret
    # Passed through, and (like every value handed to a server but paths) masked in what the
    # server says back: Tether cannot tell a setting from a token.
    assert shown["ALLOWED_SETTING"] == "***"


async def test_a_value_given_to_the_server_never_comes_back_in_a_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server handed a token through its environment may echo it (``get-env`` does): the
    runtime scrubs it from the result before the model or the journal sees it."""
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_do_not_leak_98765")
    servers = MCPServers([everything_stdio(env=("PATH", "GITHUB_TOKEN"))])
    get_env = servers.tool("everything", "get-env")

    @tether.agent(tools=[get_env])
    async def env(ctx: tether.Context) -> str:
        return str(await ctx.tool("get-env", {}))

    db = f"sqlite:///{tmp_path / 'tether.db'}"
    async with servers, tether.Runtime(db) as rt:
        handle = await rt.start(env)
        shown = json.loads(str(await handle.result()))
        journal = await rt.journal(handle.run_id)
    masked = "***"
    assert shown["GITHUB_TOKEN"] == masked  # the server did receive it, and said so
    assert "ghp_do_not_leak_98765" not in json.dumps([r.to_json() for r in journal])


async def test_a_header_whose_variable_is_unset_fails_the_connection_clearly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVERYTHING_AUTH", raising=False)
    servers = MCPServers([HTTPServer(name="everything", url="http://127.0.0.1:9/mcp",
                                     headers={"Authorization": "EVERYTHING_AUTH"})])
    with pytest.raises(MCPServerError, match="header Authorization takes its value from the "
                                             "environment variable EVERYTHING_AUTH, which is "
                                             "not set"):
        await servers.start()
    await servers.aclose()


async def test_http_headers_carry_values_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The HTTP server is unreachable on purpose: the error names the url, not the secret."""
    monkeypatch.setenv("EVERYTHING_AUTH", "Bearer sk-header-secret")
    servers = MCPServers([HTTPServer(name="everything", url="http://127.0.0.1:9/mcp",
                                     headers={"Authorization": "EVERYTHING_AUTH"},
                                     startup_timeout=5)])
    with pytest.raises(MCPServerError) as caught:
        await servers.start()
    await servers.aclose()
    assert "MCP server 'everything' failed to connect" in caught.value.message
    assert "sk-header-secret" not in caught.value.message
