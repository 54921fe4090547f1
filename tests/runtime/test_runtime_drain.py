"""Draining a runtime for shutdown: calls in flight finish, runs stop between effects."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import tether
from conftest import fast_settings
from tether.types import RunStatus

pytestmark = pytest.mark.anyio


async def test_drain_lets_a_side_effect_finish_and_the_run_resumes_elsewhere(
        tmp_path: Path) -> None:
    """A non-idempotent call in flight at shutdown completes once; no run needs attention."""
    db = f"sqlite:///{tmp_path / 'drain.db'}"
    calls: list[str] = []
    entered = anyio.Event()

    @tether.tool(side_effects=True)
    async def charge(amount: int) -> str:
        entered.set()
        await anyio.sleep(0.3)
        calls.append(f"charge {amount}")
        return "charged"

    @tether.tool(side_effects=False)
    async def receipt(amount: int) -> str:
        calls.append(f"receipt {amount}")
        return "sent"

    @tether.agent(name="drainable", version="1", tools=[charge, receipt])
    async def drainable(ctx: tether.Context, amount: int) -> list[str]:
        return [await ctx.tool("charge", {"amount": amount}),
                await ctx.tool("receipt", {"amount": amount})]

    async with tether.Runtime(settings=fast_settings(db)) as rt:
        handle = await rt.start(drainable, {"amount": 5}, run_id="r1")
        await entered.wait()
        await rt.drain(5)
        assert rt.active_runs == 0
        run = await rt.get("r1")
        assert run.status is RunStatus.RUNNING  # stopped between effects, not settled
        assert calls == ["charge 5"]  # the call in flight finished; the next never started

    async with tether.Runtime(settings=fast_settings(db), agents=[drainable]) as rt:
        assert await rt.handle(handle.run_id).result() == ["charged", "sent"]
    assert calls == ["charge 5", "receipt 5"]


async def test_a_draining_runtime_starts_no_new_runs(db_url: str) -> None:
    @tether.agent
    async def idle(ctx: tether.Context) -> None:
        return None

    async with tether.Runtime(settings=fast_settings(db_url)) as rt:
        await rt.drain(0)
        with pytest.raises(tether.errors.UsageError, match="draining"):
            await rt.start(idle)
