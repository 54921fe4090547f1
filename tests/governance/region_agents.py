"""The agent the data-residency tests run in real processes (``python -m tether``): it looks
an order up and answers."""

from __future__ import annotations

import tether
from tether.agents import ToolLoop
from tether.testing import ScriptedModel
from tether.types import Reply, ToolCall


@tether.tool(side_effects=False)
def lookup_order(order_id: str) -> dict[str, object]:
    """Look an order up."""
    return {"order_id": order_id, "paid": 900}


_loop = ToolLoop(ScriptedModel([
    Reply(text="Looking it up.", tool_calls=[ToolCall("lookup_order", {"order_id": "A-1"}, "c0")]),
    Reply(text="It was paid."),
]), tools=[lookup_order], system="You are a support agent.")


@tether.agent(name="support", version="1", tools=[lookup_order])
async def support(ctx: tether.Context, question: str) -> str:
    return await _loop.run(ctx, question)
