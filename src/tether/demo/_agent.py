"""The demo agent: answers a customer about an order, with three kinds of tools.

* ``lookup_order`` only reads (``side_effects=False``): replayed from the journal, never
  re-run after a crash.
* ``reserve_stock`` is flaky: its first attempt fails and its ``Retry`` policy tries again;
  both attempts are visible in the journal.
* ``send_receipt`` changes the world (it "sends" an e-mail by appending to an outbox file)
  and is idempotent: it passes the call's idempotency key along, so even a call interrupted
  by a crash cannot produce two e-mails.

The model is a ``ScriptedModel`` with a little latency, so a crash can land mid-"thinking".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import tether
from tether.agents import ToolLoop
from tether.models import ScriptedModel
from tether.types import Reply, ToolCall, Usage

MODEL_LATENCY_SECONDS = 0.4


def demo_dir() -> Path:
    return Path(os.environ.get("TETHER_DEMO_DIR", ".tether/demo"))


def _count(name: str, key: str) -> int:
    """Count a real execution in a file, so the demo can show what ran and what replayed."""
    path = demo_dir() / name
    with path.open("a", encoding="utf-8") as log:
        log.write(key + "\n")
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line == key)


@tether.tool(side_effects=False)
def lookup_order(order_id: str) -> dict[str, object]:
    """Look an order up in the order database.

    Args:
        order_id: the order number, like A-1001.
    """
    _count("lookup_order.calls", order_id)
    return {"order_id": order_id, "item": "espresso grinder", "quantity": 1, "paid": True}


@tether.tool(side_effects=True, idempotent=True,
             retry=tether.Retry(max_attempts=3, initial_delay=0.2, backoff=2.0))
def reserve_stock(item: str, quantity: int, call: tether.ToolContext) -> dict[str, object]:
    """Reserve stock in the warehouse (the warehouse API is flaky)."""
    if _count("reserve_stock.attempts", call.idempotency_key) == 1:
        raise ConnectionError("warehouse API timed out")
    return {"reserved": quantity, "item": item, "reservation": f"R-{call.seq:04d}"}


@tether.tool(side_effects=True, idempotent=True)
def send_receipt(order_id: str, email: str, call: tether.ToolContext) -> dict[str, object]:
    """E-mail the customer a receipt (deduplicated by the call's idempotency key)."""
    outbox = demo_dir() / "outbox.jsonl"
    sent = outbox.read_text(encoding="utf-8").splitlines() if outbox.exists() else []
    if not any(json.loads(line)["key"] == call.idempotency_key for line in sent):
        with outbox.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"key": call.idempotency_key, "to": email,
                                  "order_id": order_id}) + "\n")
    _count("send_receipt.calls", call.idempotency_key)
    return {"sent": True, "to": email}


def _call(name: str, args: dict[str, object], call_id: str) -> Reply:
    return Reply(tool_calls=[ToolCall(name, args, call_id)], usage=Usage(120, 18))


MODEL = ScriptedModel([
    _call("lookup_order", {"order_id": "A-1001"}, "call-1"),
    _call("reserve_stock", {"item": "espresso grinder", "quantity": 1}, "call-2"),
    _call("send_receipt", {"order_id": "A-1001", "email": "ada@example.com"}, "call-3"),
    Reply(text="Your espresso grinder (order A-1001) is reserved and a receipt is on its way "
               "to ada@example.com.", usage=Usage(260, 31)),
], latency=MODEL_LATENCY_SECONDS, name="scripted-support")

LOOP = ToolLoop(MODEL, tools=[lookup_order, reserve_stock, send_receipt],
                system="You are a support agent for an online shop.", max_steps=8)


MODEL_VARIABLE = "TETHER_DEMO_MODEL"
"""Names a configured model (``tether demo --model NAME``) to use instead of the script."""


@tether.agent(name="support", version="demo-1", tools=[lookup_order, reserve_stock, send_receipt])
async def support(ctx: tether.Context, question: str) -> str:
    """Answer a customer's question about an order."""
    model = os.environ.get(MODEL_VARIABLE)
    if not model:
        return await LOOP.run(ctx, question)
    loop = ToolLoop(model, tools=LOOP.tools, system=LOOP.system, max_steps=LOOP.max_steps)
    return await loop.run(ctx, question)
