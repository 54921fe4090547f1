"""``workspace = "run"``: one workspace per run, kept across its calls (each still a fresh
sandbox), removed when the run ends, and never shared between runs or tenants."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tether
from tether.errors import ConfigError, SandboxError
from tether.sandbox import Sandbox, sandbox_config

from . import sandboxed_tools as tools

pytestmark = pytest.mark.anyio


@pytest.fixture
def per_run(sandbox: Sandbox, workspace: Path) -> Sandbox:
    os.chmod(workspace, 0o755)  # noqa: S103  (a sandbox's uid must pass through it)
    return Sandbox(sandbox_config({"run_workspaces": str(workspace / "runs"),
                                  "profiles": {"per-run": {"workspace": "run"}}}))


@tether.agent(tools=[tools.jot])
async def jotter(ctx: tether.Context, lines: list[str]) -> object:
    seen = [await ctx.tool("jot", {"line": line}) for line in lines]
    return seen


async def test_a_run_keeps_its_workspace_across_calls_until_it_ends(per_run: Sandbox,
                                                                    workspace: Path) -> None:
    async with tether.Runtime("memory://", sandbox=per_run) as rt:
        first = await rt.run(jotter, {"lines": ["a", "b"]}, run_id="r1", tenant="t1")
        # Each call was a sandbox of its own, with a host uid of its own: the second could
        # append to what the first wrote because the workspace was handed over to it.
        assert first == [{"lines": ["a"], "uid": 1000}, {"lines": ["a", "b"], "uid": 1000}]
        again = await rt.run(jotter, {"lines": ["c"]}, run_id="r2", tenant="t1")
        assert again == [{"lines": ["c"], "uid": 1000}]  # another run: a fresh workspace
    assert os.listdir(workspace / "runs") == []  # both runs ended: both removed


async def test_tenants_never_share_a_run_workspace(per_run: Sandbox) -> None:
    mine, theirs = per_run.run_workspace("t1", "same"), per_run.run_workspace("t2", "same")
    assert mine != theirs
    assert per_run.run_workspace("t1", "same") == mine
    first = await per_run.call(tools.__name__, "jot", {"line": "mine"}, profile="per-run",
                               run=("t1", "same"))
    other = await per_run.call(tools.__name__, "jot", {"line": "theirs"}, profile="per-run",
                               run=("t2", "same"))
    assert first.result == {"lines": ["mine"], "uid": 1000}
    assert other.result == {"lines": ["theirs"], "uid": 1000}
    per_run.release_run("t1", "same")
    per_run.release_run("t2", "same")
    assert not mine.exists()
    assert not theirs.exists()


async def test_a_run_workspace_needs_a_run(per_run: Sandbox) -> None:
    with pytest.raises(SandboxError, match="belongs to no run"):
        await per_run.call(tools.__name__, "jot", {"line": "x"}, profile="per-run")


async def test_a_cancelled_run_loses_its_workspace(per_run: Sandbox) -> None:
    per_run.run_workspace("default", "gone").joinpath("left").write_text("x")
    async with tether.Runtime("memory://", sandbox=per_run) as rt:
        handle = await rt.start(jotter, {"lines": []}, run_id="gone")
        await rt.cancel(handle.run_id)
    assert not per_run.run_workspace("default", "gone").joinpath("left").exists()


def test_warm_workers_need_call_workspaces() -> None:
    with pytest.raises(ConfigError, match="warm_workers needs workspace = 'call'"):
        sandbox_config({"profiles": {"x": {"workspace": "run", "warm_workers": 1}}})


@pytest.mark.escape
async def test_handing_a_workspace_over_never_follows_its_links(per_run: Sandbox) -> None:
    before = {path: (os.stat(path).st_uid, os.stat(path).st_gid) for path in
              ("/etc", "/etc/passwd", "/etc/hostname")}
    for tool in ("plant_links", "jot"):
        outcome = await per_run.call(tools.__name__, tool,
                                     {} if tool == "plant_links" else {"line": "x"},
                                     profile="per-run", run=("t", "links"))
        assert outcome.ok, outcome.message
    after = {path: (os.stat(path).st_uid, os.stat(path).st_gid) for path in before}
    assert after == before
    per_run.release_run("t", "links")
