"""Tools declared with ``sandbox=PROFILE`` run in a sandboxed worker, through the runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

import tether
from tether.errors import ToolError
from tether.sandbox import Sandbox, sandbox_config
from tether.tools import python_exec, shell_exec

from . import sandboxed_tools as tools

pytestmark = pytest.mark.anyio


def make_sandbox() -> Sandbox:
    return Sandbox(sandbox_config({"profiles": {"warm": {"warm_workers": 2}}}))


@tether.agent(tools=[tools.whoami, tools.explode, tools.hang, tools.add, tools.ping,
                     python_exec, shell_exec])
async def caller(ctx: tether.Context, tool: str, args: dict[str, object]) -> object:
    try:
        return await ctx.tool(tool, args)
    except ToolError as exc:
        return {"error": type(exc).__name__, "message": exc.message}


async def call(sandbox: Sandbox, tool: str, args: dict[str, object]) -> object:
    async with tether.Runtime("memory://", sandbox=sandbox) as rt:
        return await rt.run(caller, {"tool": tool, "args": args})


async def test_a_sandboxed_tool_runs_unprivileged_without_secrets(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    got = await call(sandbox, "whoami", {"tag": "a"})
    assert isinstance(got, dict)
    assert got["uid"] == 1000
    assert got["cwd"] == "/workspace"
    assert got["previous"] == []
    assert "OPENAI_API_KEY" not in got["env"]
    assert got["key"].endswith(":1")


async def test_an_exception_comes_back_with_its_traceback(sandbox: Sandbox) -> None:
    got = await call(sandbox, "explode", {"message": "boom"})
    assert isinstance(got, dict)
    assert got["error"] == "ToolError"
    assert got["message"].startswith("ValueError: boom")
    assert "Traceback (most recent call last)" in got["message"]
    assert "sandboxed_tools.py" in got["message"]


async def test_async_tools_and_bad_arguments(sandbox: Sandbox) -> None:
    assert await call(sandbox, "add", {"a": 2, "b": 3}) == 5
    got = await call(sandbox, "add", {"a": "x", "b": 3})
    assert isinstance(got, dict)
    assert got["error"] == "ToolArgumentError"


async def test_a_timed_out_tool_leaves_no_process_behind(
        sandbox: Sandbox, no_leftover_processes: None) -> None:
    got = await call(sandbox, "hang", {})
    assert isinstance(got, dict)
    assert got["error"] == "ToolTimeout"


async def test_python_exec_and_shell_exec(sandbox: Sandbox) -> None:
    got = await call(sandbox, "python_exec",
                     {"code": "import os; print(2 + 2, os.getcwd()); open('/etc/x', 'w')"})
    assert isinstance(got, dict)
    assert got["stdout"] == "4 /workspace\n"
    assert got["exit_code"] == 1
    assert "PermissionError" in got["stderr"]
    got = await call(sandbox, "shell_exec", {"command": "id -u; cat /etc/shadow"})
    assert isinstance(got, dict)
    assert got["stdout"] == "1000\n"
    assert "No such file" in got["stderr"]


async def test_warm_workers_serve_one_call_each(sandbox: Sandbox) -> None:
    async with make_sandbox() as pooled:
        await pooled.warm("warm", tools.__name__)
        [pool] = pooled._pools.values()  # one pool: the warm profile's, for this module
        assert len(pool.ready) == 2
        ready = [worker.pid for worker in pool.ready]
        outcome = await pooled.call(tools.__name__, "ping", {}, profile="warm")
        assert outcome.ok
        assert outcome.result == "pong"
        assert ready[0] not in [worker.pid for worker in pool.ready]  # used once, no more
    assert not pooled._pools
    for pid in ready:  # the used worker and the idle ones: all destroyed on exit
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "State:\tZ" in status.read_text()


async def test_calls_never_share_a_workspace(sandbox: Sandbox) -> None:
    first = await sandbox.call(tools.__name__, "whoami", {"tag": "one"},
                               context={"run_id": "r", "seq": 1, "attempt": 1,
                                        "idempotency_key": "r:1", "tool": "whoami"})
    second = await sandbox.call(tools.__name__, "whoami", {"tag": "two"},
                                context={"run_id": "r", "seq": 2, "attempt": 1,
                                         "idempotency_key": "r:2", "tool": "whoami"})
    assert first.ok
    assert second.ok
    assert isinstance(second.result, dict)
    assert second.result["previous"] == []


def test_a_sandboxed_tool_must_be_importable() -> None:
    def local() -> None: ...

    with pytest.raises(tether.TetherError, match="importable module"):
        tether.tool(sandbox="default")(local)
