"""Agents the governance command-line tests run in real processes (``python -m tether``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import tether
from tether.agents import ToolLoop
from tether.testing import ScriptedModel
from tether.types import Reply, ToolCall


@tether.tool(side_effects=False)
def lookup_order(order_id: str) -> dict[str, object]:
    """Look an order up."""
    return {"order_id": order_id, "paid": 900}


@tether.tool(idempotent=True)
def refund(order_id: str, amount: int, call: tether.ToolContext) -> str:
    """Refund an order; each refund is a line in the ledger (GOV_LEDGER)."""
    with Path(os.environ["GOV_LEDGER"]).open("a", encoding="utf-8") as ledger:
        ledger.write(json.dumps({"order_id": order_id, "amount": amount,
                                 "key": call.idempotency_key}) + "\n")
    return f"refunded {amount}"


_model = ScriptedModel([
    Reply(text="Looking it up.", tool_calls=[ToolCall("lookup_order", {"order_id": "A-1"}, "c0")]),
    Reply(text="The order was paid 900; refunding all of it.",
          tool_calls=[ToolCall("refund", {"order_id": "A-1", "amount": 900}, "c1")]),
    Reply(text="Refund done."),
])
_loop = ToolLoop(_model, tools=[lookup_order, refund], system="You are a support agent.")


@tether.agent(name="support", version="1", tools=[lookup_order, refund])
async def support(ctx: tether.Context, question: str) -> str:
    return await _loop.run(ctx, question)
