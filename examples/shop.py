"""The README's tour agent: a support agent with a read-only tool and an idempotent refund.

    tether run examples.shop:support --input '{"question": "Refund order A-1"}' --follow

The model is scripted (no network); swap in a real one later without touching the agent.
"""

from __future__ import annotations

import json
from pathlib import Path

import tether
from tether.agents import ToolLoop
from tether.testing import ScriptedModel
from tether.types import Reply, ToolCall

REFUNDS = Path(".tether/refunds.jsonl")


@tether.tool(side_effects=False)
def lookup_order(order_id: str) -> dict[str, object]:
    """Look an order up.

    Args:
        order_id: the order number, like A-1.
    """
    return {"order_id": order_id, "status": "delivered", "paid": 42.0}


@tether.tool(idempotent=True, retry=tether.Retry(max_attempts=3, initial_delay=0.5))
def refund(order_id: str, amount: float, call: tether.ToolContext) -> str:
    """Refund an order. The idempotency key is the same on every attempt and after a crash,
    so a payment API that deduplicates on it never pays twice."""
    done = REFUNDS.read_text().splitlines() if REFUNDS.exists() else []
    if not any(json.loads(line)["key"] == call.idempotency_key for line in done):
        REFUNDS.parent.mkdir(parents=True, exist_ok=True)
        with REFUNDS.open("a") as out:
            out.write(json.dumps({"key": call.idempotency_key, "order_id": order_id,
                                  "amount": amount}) + "\n")
    return f"refunded {amount:.2f} for {order_id}"


model = ScriptedModel([
    Reply(tool_calls=[ToolCall("lookup_order", {"order_id": "A-1"}, "c1")]),
    Reply(tool_calls=[ToolCall("refund", {"order_id": "A-1", "amount": 42.0}, "c2")]),
    Reply(text="Order A-1 is refunded: 42.00 is on its way back to you."),
], latency=1.0)

loop = ToolLoop(model, tools=[lookup_order, refund], system="You are a support agent.")


@tether.agent(tools=[lookup_order, refund])
async def support(ctx: tether.Context, question: str) -> str:
    """Answer a customer."""
    return await loop.run(ctx, question)
