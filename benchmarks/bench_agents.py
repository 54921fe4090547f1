"""Agents, tools and models the benchmarks run.

A module of its own so that worker processes (``tether worker``, ``tether run``) can import the
agents by reference (``bench_agents:recovery``); the scripts put this directory on PYTHONPATH.

Every agent keeps a growing message list, as a real agent does, and each step is one model call
(``ScriptedModel``, which always asks for one tool call) and one tool call.
"""

from __future__ import annotations

import functools
import json
import os
import time
import uuid
from typing import Any

import anyio

import tether
from tether.models import ModelRequest, ToolSpec
from tether.store import NewRun, open_store
from tether.testing import ScriptedModel
from tether.types import JSONObject, Reply, ToolCall, Usage

SYSTEM = "You are a support agent for an online shop. Answer briefly."


def ask_for_tool(messages: list[JSONObject], tools: list[ToolSpec]) -> Reply:
    """The scripted model's answer: call the first offered tool about the n-th message."""
    n = len(messages)
    return Reply(tool_calls=[ToolCall(tools[0].name, {"order_id": f"A-{n}"}, f"call-{n}")],
                 usage=Usage(12 * n, 18))


def _latency(variable: str, default: float) -> float:
    return float(os.environ.get(variable, default))


FAST_MODEL = ScriptedModel(ask_for_tool, name="bench-0ms")
"""No latency: what a step costs the runtime itself."""

SLOW_MODEL = ScriptedModel(ask_for_tool, latency=_latency("BENCH_SLOW_LATENCY", 0.05),
                           name="bench-50ms")
"""50 ms per call (BENCH_SLOW_LATENCY): many concurrent runs, each mostly waiting."""

RECOVERY_MODEL = ScriptedModel(ask_for_tool, latency=_latency("BENCH_RECOVERY_LATENCY", 0.01),
                               name="bench-recovery")
"""10 ms per call (BENCH_RECOVERY_LATENCY), so a worker can be killed halfway."""


# -- tools -------------------------------------------------------------------------------------

def _order(order_id: str) -> dict[str, Any]:
    return {"order_id": order_id, "item": "espresso grinder", "quantity": 1, "paid": True}


@tether.tool(name="lookup_order", side_effects=False)
async def lookup_async(order_id: str) -> dict[str, Any]:
    """Look an order up (async, read-only)."""
    return _order(order_id)


@tether.tool(name="lookup_order", side_effects=False)
def lookup_sync(order_id: str) -> dict[str, Any]:
    """Look an order up (sync, read-only: the runtime calls it in a thread)."""
    return _order(order_id)


@tether.tool(name="update_order", side_effects=True)
async def update_async(order_id: str) -> dict[str, Any]:
    """Change an order (async, side-effecting: its intent is durable before it runs)."""
    return {**_order(order_id), "updated": True}


@tether.tool(name="notify", side_effects=True, idempotent=True)
async def notify(order_id: str, call: tether.ToolContext) -> dict[str, Any]:
    """Tell the customer (idempotent: a call cut short by a crash is made again)."""
    return {"sent": True, "order_id": order_id, "key": call.idempotency_key}


# -- the agent loop ----------------------------------------------------------------------------

async def tool_loop(ctx: tether.Context, model: ScriptedModel, tool: tether.Tool,
                    steps: int) -> list[JSONObject]:
    """``steps`` times: ask the model, call the tool it asks for, add both to the messages."""
    messages: list[JSONObject] = [{"role": "system", "content": SYSTEM},
                                  {"role": "user", "content": "Where is my order?"}]
    for _ in range(steps):
        reply = await ctx.llm(model, messages, tools=[tool])
        messages.append(reply.to_message())
        for call in reply.tool_calls:
            result = await ctx.tool(tool, call.args)
            messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                             "content": json.dumps(result)})
    return messages


async def plain_loop(model: ScriptedModel, tool: tether.Tool, steps: int) -> list[JSONObject]:
    """The same loop with no runtime: the baseline a step's overhead is measured against."""
    messages: list[JSONObject] = [{"role": "system", "content": SYSTEM},
                                  {"role": "user", "content": "Where is my order?"}]
    specs = [tool.spec]
    for index in range(steps):
        reply = await model.complete(ModelRequest(list(messages), specs, call_index=index))
        messages.append(reply.to_message())
        for call in reply.tool_calls:
            if tool.is_async:
                result = await tool.fn(**call.args)
            else:
                result = await anyio.to_thread.run_sync(functools.partial(tool.fn, **call.args))
            messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                             "content": json.dumps(result)})
    return messages


# B1: one long run, no model latency.

@tether.agent(name="steps_async_read", version="bench-1", tools=[lookup_async])
async def steps_async_read(ctx: tether.Context, steps: int) -> int:
    return len(await tool_loop(ctx, FAST_MODEL, lookup_async, steps))


@tether.agent(name="steps_sync_read", version="bench-1", tools=[lookup_sync])
async def steps_sync_read(ctx: tether.Context, steps: int) -> int:
    return len(await tool_loop(ctx, FAST_MODEL, lookup_sync, steps))


@tether.agent(name="steps_async_write", version="bench-1", tools=[update_async])
async def steps_async_write(ctx: tether.Context, steps: int) -> int:
    return len(await tool_loop(ctx, FAST_MODEL, update_async, steps))


B1_VARIANTS: dict[str, tuple[tether.Agent, tether.Tool]] = {
    "async-read": (steps_async_read, lookup_async),
    "sync-read": (steps_sync_read, lookup_sync),
    "async-write": (steps_async_write, update_async),
}


# B2: many concurrent runs, 50 ms per model call.

@tether.agent(name="concurrent", version="bench-1", tools=[lookup_async])
async def concurrent(ctx: tether.Context, steps: int) -> int:
    return len(await tool_loop(ctx, SLOW_MODEL, lookup_async, steps))


# B3: a multi-step agent killed halfway and recovered.

@tether.agent(name="recovery", version="bench-1", tools=[lookup_async, notify])
async def recovery(ctx: tether.Context, steps: int) -> int:
    messages = await tool_loop(ctx, RECOVERY_MODEL, lookup_async, steps)
    await ctx.tool(notify, {"order_id": "A-1"})
    return len(messages)


def recovery_records(steps: int) -> int:
    """Journal records one ``recovery`` run writes: a model reply and a tool result per step,
    and the notification."""
    return 2 * steps + 1


# B4: a one-step agent run by `tether run`, and runs parked on a signal.

@tether.agent(name="one_step", version="bench-1", tools=[lookup_async])
async def one_step(ctx: tether.Context) -> int:
    return len(await tool_loop(ctx, FAST_MODEL, lookup_async, 1))


@tether.agent(name="waiter", version="bench-1")
async def waiter(ctx: tether.Context) -> Any:
    return await ctx.wait("go")


async def create_pending(db_url: str, agent: tether.Agent, input: JSONObject, runs: int) -> None:
    """Create ``runs`` runs of ``agent``, pending and owned by nobody, for a worker to claim
    (what another process's ``Runtime.start`` would leave when it cannot run them itself)."""
    store = open_store(tether.Settings(db=db_url))
    await store.open()

    async def create() -> None:
        await store.create_run(
            NewRun(run_id=uuid.uuid4().hex, agent=agent.name, agent_version=agent.version,
                   agent_ref=agent.ref, input=json.dumps(input), tenant="default",
                   principal="default"),
            now_ms=int(time.time() * 1000), owner=None, lease_ms=30_000)

    try:
        async with anyio.create_task_group() as group:
            for _ in range(runs):
                group.start_soon(create)
    finally:
        await store.aclose()
