"""The Python reference servers (``mcp-server-time``, ``mcp-server-git``) over stdio: their
tools listed with schemas, called through the runtime's pipeline, and tool error results."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp_support import venv_bin

import tether
from peers import executable
from tether.errors import ConfigError, ToolError
from tether.mcp import MCPServers, StdioServer, ToolOptions
from tether.store import RecordState

pytestmark = pytest.mark.anyio


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git = executable("git")
    path = tmp_path / "repo"
    path.mkdir()
    subprocess.run([git, "init", "-q", str(path)], check=True)
    (path / "hello.txt").write_text("hi\n")
    return path


@pytest.fixture
async def servers(repo: Path) -> AsyncIterator[MCPServers]:
    async with MCPServers([
        StdioServer(name="time", command=venv_bin("mcp-server-time"),
                    args=("--local-timezone", "UTC"), side_effects=False),
        StdioServer(name="git", command=venv_bin("mcp-server-git"),
                    args=("--repository", str(repo)), prefix="repo_",
                    tools={"git_status": ToolOptions(side_effects=False)}),
    ]) as started:
        yield started


async def test_tools_are_listed_with_their_json_schemas(servers: MCPServers) -> None:
    names = {tool.name for tool in await servers.tools("time")}
    assert names == {"get_current_time", "convert_time"}
    status = servers.tool("git", "git_status")
    assert status.name == "repo_git_status"
    assert status.spec.parameters["required"] == ["repo_path"]
    assert status.spec.parameters["properties"]["repo_path"]["type"] == "string"
    assert "status" in status.spec.description.lower()
    assert "repo_git_commit" in {tool.name for tool in await servers.tools("git")}


async def test_calls_pass_the_pipeline_and_are_journaled(servers: MCPServers, repo: Path,
                                                         sqlite_url: str) -> None:
    now = servers.tool("time", "get_current_time")
    status = servers.tool("git", "git_status")

    @tether.agent(tools=[now, status])
    async def inspect(ctx: tether.Context) -> list[object]:
        return [await ctx.tool("get_current_time", {"timezone": "Europe/Paris"}),
                await ctx.tool("repo_git_status", {"repo_path": str(repo)})]

    async with tether.Runtime(sqlite_url) as rt:
        result: Any = await rt.run(inspect, run_id="r1")
        paris, git_status = result
        records = await rt.journal("r1")
    assert paris["timezone"] == "Europe/Paris"
    assert paris["datetime"].endswith("+01:00")
    assert "hello.txt" in git_status
    assert "No commits yet" in git_status
    assert [(r.kind, r.name, r.state) for r in records] == [
        ("tool", "get_current_time", RecordState.OK), ("tool", "repo_git_status", RecordState.OK)]
    assert json.loads(records[0].value or "")["timezone"] == "Europe/Paris"


async def test_a_tool_error_result_becomes_a_tool_error(servers: MCPServers, repo: Path) -> None:
    now = servers.tool("time", "get_current_time")
    status = servers.tool("git", "git_status")

    @tether.agent(tools=[now, status])
    async def wrong(ctx: tether.Context) -> list[dict[str, object]]:
        errors = []
        for name, args in (("get_current_time", {"timezone": "Mars/Olympus"}),
                           ("repo_git_status", {"repo_path": str(repo.parent)})):
            try:
                await ctx.tool(name, args)
            except ToolError as exc:
                errors.append(exc.to_json())
        return errors

    async with tether.Runtime("memory://") as rt:
        result: Any = await rt.run(wrong)
    time_error, git_error = result
    assert time_error["code"] == "tool.failed"
    assert time_error["error_type"] == "MCPToolError"
    assert "Invalid timezone" in str(time_error["message"])
    assert "outside the allowed repository" in str(git_error["message"])


async def test_arguments_that_do_not_fit_the_schema_never_reach_the_server(
        servers: MCPServers) -> None:
    now = servers.tool("time", "get_current_time")

    @tether.agent(tools=[now])
    async def sloppy(ctx: tether.Context) -> str:
        try:
            await ctx.tool("get_current_time", {"zone": "UTC"})
        except tether.errors.ToolArgumentError as exc:
            return exc.message
        return "called"

    async with tether.Runtime("memory://") as rt:
        message = await rt.run(sloppy)
    assert message == ("invalid arguments for get_current_time: arguments: 'timezone' is a "
                       "required property")


async def test_starting_checks_that_declared_tools_exist(repo: Path) -> None:
    servers = MCPServers([StdioServer(name="time", command=venv_bin("mcp-server-time"))])
    servers.tool("time", "get_time")
    try:
        with pytest.raises(ConfigError, match=r"no tool 'get_time'.*offers: convert_time, "
                                              r"get_current_time"):
            await servers.start()
    finally:
        await servers.aclose()
