"""Agents the server tests start (importable as ``server_agents:NAME`` by a server process)."""

from __future__ import annotations

import itertools

import anyio

import tether
from tether.agents import ToolLoop
from tether.testing import ScriptedModel
from tether.types import JSONObject, Reply, ToolCall, Usage

MODEL = ScriptedModel(lambda messages, tools: Reply(
    text="Hello from the model", usage=Usage(input_tokens=12, output_tokens=5, cost_usd=0.0001)))


@tether.tool(side_effects=False)
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


@tether.agent(name="greeter", version="1")
async def greeter(ctx: tether.Context, name: str) -> str:
    return f"hello {name}"


@tether.agent(name="chatty", version="1", tools=[shout])
async def chatty(ctx: tether.Context, name: str) -> str:
    reply = await ctx.llm(MODEL, [{"role": "user", "content": f"greet {name}"}])
    loud = await ctx.tool(shout, {"text": reply.text or ""})
    return f"{loud} {name}"


@tether.agent(name="stepper", version="1")
async def stepper(ctx: tether.Context, steps: int, pause: float = 0.0) -> int:
    """``steps`` journaled steps, ``pause`` seconds apart (for streams to watch)."""
    total = 0
    for i in range(steps):
        total += await ctx.step(f"step-{i}", lambda i=i: i)
        if pause:
            await anyio.sleep(pause)
    return total


@tether.agent(name="waiter", version="1")
async def waiter(ctx: tether.Context) -> object:
    return await ctx.wait("go")


AGENTS = [greeter, chatty, stepper, waiter]


@tether.agent(name="patient", version="1")
async def patient(ctx: tether.Context) -> str:
    """Waits for ``go``, then asks the model (so a stream opened meanwhile sees its deltas)."""
    await ctx.wait("go")
    reply = await ctx.llm(MODEL, [{"role": "user", "content": "speak"}])
    return reply.text or ""


AGENTS.append(patient)


@tether.tool(idempotent=True)
def refund(order_id: str, amount: int) -> str:
    """Refund an order (the test policies hold refunds over 500 for a supervisor)."""
    return f"refunded {amount} on {order_id}"


def _support_script(messages: list[JSONObject], tools: object) -> Reply:
    if messages[-1].get("role") == "tool":
        return Reply(text=f"done: {messages[-1].get('content')}")
    return Reply(text="I will refund it", tool_calls=[ToolCall("refund", {
        "order_id": "A-1", "amount": 900}, "call-1")])


SUPPORT_MODEL = ScriptedModel(_support_script)
_loop = ToolLoop(SUPPORT_MODEL, tools=[refund], system="You are a support agent.")


@tether.agent(name="support", version="1", tools=[refund])
async def support(ctx: tether.Context, question: str) -> str:
    return await _loop.run(ctx, question)


AGENTS.append(support)

_attempts = itertools.count()


@tether.agent(name="fickle", version="1")
async def fickle(ctx: tether.Context) -> str:
    """Names its step differently each time it runs, so replaying it after ``go`` is
    non-deterministic and parks the run in needs_attention (for ``resolve``)."""
    await ctx.step(f"step-{next(_attempts)}", lambda: 1)
    await ctx.wait("go")
    return "never"


AGENTS.append(fickle)
