"""A sandboxed tool that takes its time, for the kill-switch test (imported by the sandboxed
worker, so it lives at the top level of an importable module)."""

from __future__ import annotations

import time

import tether


@tether.tool(sandbox="default")
def linger(seconds: float) -> str:
    """Sleep, then answer (the test cancels the run long before)."""
    time.sleep(seconds)
    return "finished"


@tether.agent(tools=[linger])
async def lingerer(ctx: tether.Context) -> str:
    return str(await ctx.tool("linger", {"seconds": 600}))
