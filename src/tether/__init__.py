"""Tether: a durable, governed agent runtime.

Write agents as plain async Python; every effect they make goes through a journal, so a crash
loses no work and repeats no side effect::

    import tether

    @tether.tool(side_effects=False)
    def lookup(order_id: str) -> dict: ...

    @tether.agent(tools=[lookup])
    async def support(ctx: tether.Context, order_id: str) -> str:
        order = await ctx.tool("lookup", {"order_id": order_id})
        ...

    async with tether.Runtime("sqlite:///tether.db") as rt:
        result = await rt.run(support, {"order_id": "A-1"})
"""

from tether.config import Settings
from tether.errors import TetherError
from tether.models import Model, ModelRequest, ToolSpec
from tether.runtime import Agent, ChildRun, Context, Event, RunHandle, Runtime, agent
from tether.tools import Retry, Tool, ToolContext, tool
from tether.types import Reply, Run, RunStatus, ToolCall, Usage

__version__ = "0.1.0"

__all__ = [
    "Agent", "ChildRun", "Context", "Event", "Model", "ModelRequest", "Reply", "Retry", "Run",
    "RunHandle", "RunStatus", "Runtime", "Settings", "TetherError", "Tool", "ToolCall",
    "ToolContext", "ToolSpec", "Usage", "agent", "tool",
]
