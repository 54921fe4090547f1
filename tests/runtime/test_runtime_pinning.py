"""Version pinning: a run resumes only on the agent version it started on, and says so loudly."""

from __future__ import annotations

import sys

import anyio
import pytest

import tether
from conftest import fast_settings
from tether.errors import RunFailed
from tether.types import RunStatus

pytestmark = pytest.mark.anyio


@tether.agent(name="greeter", version="v1")
async def greeter(ctx: tether.Context, who: str) -> str:
    await ctx.wait("go")
    return f"v1 greets {who}"


async def _greeter_v2(ctx: tether.Context, who: str) -> str:
    await ctx.wait("go")
    return f"v2 greets {who}"


greeter_v2 = tether.agent(name="greeter", version="v2")(_greeter_v2)


async def _park(db_url: str, agent: tether.Agent) -> str:
    async with tether.Runtime(settings=fast_settings(db_url)) as rt:
        handle = await rt.start(agent, {"who": "ada"})
        assert (await handle.settled()).status is RunStatus.WAITING
        return handle.run_id


async def _needs_attention(rt: tether.Runtime, run_id: str) -> tether.Run:
    with pytest.raises(RunFailed):
        await rt.handle(run_id).result()
    run = await rt.get(run_id)
    assert run.status is RunStatus.NEEDS_ATTENTION
    assert rt.active_runs == 0
    return run


async def test_parked_run_resumes_on_the_version_it_started_on(sqlite_url: str) -> None:
    run_id = await _park(sqlite_url, greeter)
    async with tether.Runtime(settings=fast_settings(sqlite_url),
                              agents=[greeter, greeter_v2]) as rt:
        await rt.signal(run_id, "go")
        assert await rt.handle(run_id).result() == "v1 greets ada"


async def test_run_whose_version_is_gone_needs_attention_with_advice_and_can_be_failed(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The module now holds v2 (a redeploy): resuming must not run v2's code on v1's journal."""
    run_id = await _park(sqlite_url, greeter)
    monkeypatch.setattr(sys.modules[__name__], "greeter", greeter_v2)
    async with tether.Runtime(settings=fast_settings(sqlite_url), agents=[greeter_v2]) as rt:
        await rt.signal(run_id, "go")
        run = await _needs_attention(rt, run_id)
        assert run.error is not None
        assert run.error["code"] == "agent.unavailable"
        message = run.error["message"]
        assert run_id in message
        assert "v1" in message
        assert "v2" in message
        assert f"tether resolve {run_id}" in message
        await anyio.sleep(0.2)  # several polls: nobody picks it up again
        assert (await rt.get(run_id)).status is RunStatus.NEEDS_ATTENTION

        settled = await rt.resolve(run_id, "fail")
        assert settled.status is RunStatus.FAILED
        with pytest.raises(RunFailed) as failed:
            await rt.handle(run_id).result()
        assert failed.value.status == "failed"


async def test_run_interrupted_mid_flight_goes_to_needs_attention_on_a_runtime_without_its_version(
        sqlite_url: str) -> None:
    """Not a zombie: a run left running by a closed runtime is taken over and flagged at once."""
    entered = anyio.Event()

    @tether.tool(side_effects=False)
    async def slow() -> str:
        entered.set()
        await anyio.sleep(60)
        return "done"

    @tether.agent(name="worker", version="v1", tools=[slow])
    async def worker_v1(ctx: tether.Context) -> str:
        return str(await ctx.tool("slow"))

    @tether.agent(name="worker", version="v2", tools=[slow])
    async def worker_v2(ctx: tether.Context) -> str:
        return "v2: " + str(await ctx.tool("slow"))

    async with tether.Runtime(settings=fast_settings(sqlite_url)) as first:
        handle = await first.start(worker_v1)
        with anyio.fail_after(10):
            await entered.wait()
    async with tether.Runtime(settings=fast_settings(sqlite_url), agents=[worker_v2]) as rt:
        run = await _needs_attention(rt, handle.run_id)
        assert run.error is not None
        assert run.error["code"] == "agent.unavailable"
        message = run.error["message"]
        assert "worker" in message
        assert "v1" in message
        # It says what to do: deploy the version, or settle the run.
        assert f"tether resolve {handle.run_id}" in message
        assert (await rt.resolve(handle.run_id, "fail")).status is RunStatus.FAILED
