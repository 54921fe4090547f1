"""The agent the PostgreSQL fleet tests run on several worker processes at once.

Each real execution of its tool logs a fresh nonce (``executions.jsonl``, see
``crash_agents``) and returns it, so a test can tell which execution's result the journal
kept, and that no execution came after it.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import tether
from tether.types import Reply, Usage

from .crash_agents import CountingModel, log_dir, record_execution

PAUSE_ENV = "E2E_PAUSE_IN_TOOL"
"""A run id in a worker's environment: that run's tool call stops half-way (after logging
``paused-<run>``) until ``release`` exists."""


@tether.tool(side_effects=True, idempotent=True)
def book_entry(job: int, call: tether.ToolContext) -> dict[str, Any]:
    nonce = uuid.uuid4().hex
    record_execution(f"tool:book_entry:{nonce}", run=call.run_id, key=call.idempotency_key,
                     attempt=call.attempt)
    time.sleep(0.02)  # a call that takes a while, so kills also land inside one
    if os.environ.get(PAUSE_ENV) == call.run_id:
        (log_dir() / f"paused-{call.run_id}").touch()
        while not (log_dir() / "release").exists():
            time.sleep(0.01)
    return {"job": job, "pid": os.getpid(), "nonce": nonce}


FLEET_MODEL = CountingModel([Reply(text="job summarized", usage=Usage(5, 2))],
                            name="scripted-fleet", latency=0.02)


@tether.agent(tools=[book_entry])
async def fleet_job(ctx: tether.Context, job: int, nap_seconds: float) -> dict[str, Any]:
    """Book an entry, park on a durable timer (the run may wake on another worker), then
    summarize."""
    entry = await ctx.tool("book_entry", {"job": job})
    await ctx.sleep(nap_seconds)
    reply = await ctx.llm(FLEET_MODEL, [{"role": "user", "content": f"summarize job {job}"}])
    record_execution("agent:return", run=ctx.run_id)
    return {"job": job, "entry": entry, "summary": reply.text}


@tether.agent()
async def signal_job(ctx: tether.Context, name: str) -> dict[str, Any]:
    """Wait for the signal ``name`` and return its data."""
    data = await ctx.wait(name)
    record_execution("agent:return", run=ctx.run_id)
    return {"signal": name, "data": data}
