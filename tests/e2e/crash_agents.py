"""Agents for the end-to-end tests, imported both by the test process and by the worker
processes the tests start and SIGKILL.

Two environment variables connect a worker process to its test:

* ``E2E_DIR``: a directory. Every real execution of a tool, a model call or a step appends
  one JSON line to ``executions.jsonl`` there, so a test counts executions across processes
  (a replayed effect appends nothing).
* ``E2E_HOLD``: the name of a hold point. The first time a process reaches that point it
  creates ``held-<point>`` in ``E2E_DIR`` and blocks until it is killed, so a test can
  SIGKILL it at an exact place (inside a tool, between two effects) instead of guessing
  with sleeps. ``E2E_SLOW_CALL=N`` and ``E2E_MODEL_LATENCY`` give model call N a latency.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

import tether
from tether.models import ModelRequest
from tether.testing import ScriptedModel
from tether.types import Reply, Usage

EXECUTIONS = "executions.jsonl"
INTERVALS = "intervals.jsonl"
HOLD_LIMIT_SECONDS = 120.0  # a held process nobody killed gives up (and fails) after this


def log_dir() -> Path:
    return Path(os.environ["E2E_DIR"])


def append_line(name: str, data: dict[str, Any]) -> None:
    """Append one JSON line with a single write, so lines from several processes never mix."""
    line = (json.dumps(data, sort_keys=True) + "\n").encode()
    fd = os.open(log_dir() / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def record_execution(what: str, *, run: str = "", key: str = "", attempt: int = 0) -> None:
    append_line(EXECUTIONS, {"what": what, "run": run, "key": key, "attempt": attempt,
                             "pid": os.getpid()})


def _claim_hold(point: str) -> bool:
    """Whether this process should block at ``point`` now (each point holds only once)."""
    if os.environ.get("E2E_HOLD") != point:
        return False
    try:
        (log_dir() / f"held-{point}").touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


def hold(point: str) -> None:
    """Block a tool or step thread at ``point`` until the process is killed."""
    if not _claim_hold(point):
        return
    deadline = time.monotonic() + HOLD_LIMIT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.01)
    raise RuntimeError(f"held at {point} for {HOLD_LIMIT_SECONDS} s and nobody killed us")


async def hold_async(point: str) -> None:
    """``hold`` for agent code and models, without blocking the event loop."""
    if not _claim_hold(point):
        return
    await anyio.sleep(HOLD_LIMIT_SECONDS)
    raise RuntimeError(f"held at {point} for {HOLD_LIMIT_SECONDS} s and nobody killed us")


class CountingModel:
    """A ``ScriptedModel`` (list form) that logs each real call and can hold or be slow."""

    def __init__(self, script: Sequence[Reply], *, name: str, latency: float = 0.0) -> None:
        self.name = name
        self._latency = latency
        self._scripted = ScriptedModel(script, name=name)

    async def complete(self, request: ModelRequest) -> Reply:
        record_execution(f"llm:{request.call_index}", run=request.run_id)
        await hold_async(f"llm-{request.call_index}")
        slow = os.environ.get("E2E_SLOW_CALL")
        self._scripted.latency = (float(os.environ.get("E2E_MODEL_LATENCY", "60"))
                                  if slow is not None and int(slow) == request.call_index
                                  else self._latency)
        return await self._scripted.complete(request)


# -- the order pipeline: one of every kind of effect, for the crash matrix ----------------------

@tether.tool(side_effects=False)
def read_inventory(item: str) -> dict[str, Any]:
    """Read how many of an item are in stock (changes nothing)."""
    record_execution("tool:read_inventory")
    return {"item": item, "in_stock": 3}


@tether.tool(side_effects=True, idempotent=True)
def charge_card(order: str, amount_cents: int, call: tether.ToolContext) -> dict[str, Any]:
    """Charge the customer; the payment API deduplicates by the idempotency key."""
    record_execution("tool:charge_card", run=call.run_id, key=call.idempotency_key,
                     attempt=call.attempt)
    hold("charge_card")
    return {"order": order, "charged_cents": amount_cents, "charge_id": f"ch-{call.seq}"}


@tether.tool(side_effects=True)
def ship_order(order: str, call: tether.ToolContext) -> dict[str, Any]:
    """Hand the parcel to the carrier: not idempotent, a second call ships a second parcel."""
    record_execution("tool:ship_order", run=call.run_id, key=call.idempotency_key,
                     attempt=call.attempt)
    hold("ship_order")
    return {"order": order, "tracking": f"TRK-{order}-{call.seq}"}


def price_of(order: str) -> int:
    record_execution("step:price")
    hold("price")
    return 4200 + len(order)


def write_receipt(order: str, charge_id: str) -> str:
    record_execution("step:receipt")
    hold("receipt")
    return f"receipt for {order} ({charge_id})"


PIPELINE_MODEL = CountingModel([
    Reply(text="plan: check stock, charge, ship, wait for approval", usage=Usage(12, 9)),
    Reply(text="order shipped and approved", usage=Usage(30, 5)),
], name="scripted-pipeline")


@tether.agent(tools=[read_inventory, charge_card, ship_order])
async def order_pipeline(ctx: tether.Context, order: str, nap_seconds: float) -> dict[str, Any]:
    """Seq 1 read-only tool, 2 model, 3 step, 4 idempotent tool, 5 non-idempotent tool,
    6 step, 7 durable sleep, 8 signal wait, 9 model."""
    stock = await ctx.tool("read_inventory", {"item": order})
    plan = await ctx.llm(PIPELINE_MODEL, [{"role": "user", "content": f"process order {order}"}])
    amount = await ctx.step("price", price_of, order)
    charge = await ctx.tool("charge_card", {"order": order, "amount_cents": amount})
    shipment = await ctx.tool("ship_order", {"order": order})
    receipt = await ctx.step("receipt", write_receipt, order, charge["charge_id"])
    await ctx.sleep(nap_seconds)
    approval = await ctx.wait("approval")
    final = await ctx.llm(PIPELINE_MODEL, [
        {"role": "user", "content": f"process order {order}"},
        {"role": "assistant", "content": plan.text},
        {"role": "user", "content": f"approved: {json.dumps(approval)}"}])
    return {"stock": stock, "plan": plan.text, "amount": amount, "charge": charge,
            "shipment": shipment, "receipt": receipt, "approval": approval, "final": final.text}


# -- a small job many runs of which two workers share ------------------------------------------

@tether.tool(side_effects=True)
def post_entry(job: int, call: tether.ToolContext) -> dict[str, Any]:
    """Post a ledger entry: not idempotent, so a second execution would show as a double."""
    record_execution("tool:post_entry", run=call.run_id, key=call.idempotency_key)
    return {"job": job, "entry": f"E-{job}"}


JOB_MODEL = CountingModel([Reply(text="job summarized", usage=Usage(5, 2))],
                          name="scripted-job", latency=0.05)


@tether.agent(tools=[post_entry])
async def shared_job(ctx: tether.Context, job: int, nap_seconds: float) -> dict[str, Any]:
    """Post an entry, park on a durable timer (so the run may wake on another worker),
    then summarize. Each execution logs (run, pid, start, end) to ``intervals.jsonl``."""
    started = time.monotonic_ns()
    try:
        entry = await ctx.tool("post_entry", {"job": job})
        await ctx.sleep(nap_seconds)
        reply = await ctx.llm(JOB_MODEL, [{"role": "user", "content": f"summarize job {job}"}])
        record_execution("agent:return", run=ctx.run_id)
        return {"job": job, "entry": entry, "summary": reply.text}
    finally:
        append_line(INTERVALS, {"run": ctx.run_id, "pid": os.getpid(), "start": started,
                                "end": time.monotonic_ns()})


# -- random programs, for the property test ----------------------------------------------------

MAX_PROGRAM_STEPS = 10
PROGRAM_MODEL = CountingModel([Reply(text=f"reply {i}", usage=Usage(3, 1))
                               for i in range(MAX_PROGRAM_STEPS)], name="scripted-program")


@tether.tool(side_effects=False)
def lookup(index: int) -> dict[str, Any]:
    """Read-only."""
    record_execution(f"tool:lookup@{index}")
    hold(f"inside-{index}")
    return {"looked_up": index}


@tether.tool(side_effects=True, idempotent=True)
def upsert(index: int, call: tether.ToolContext) -> dict[str, Any]:
    """Side-effecting and idempotent."""
    record_execution(f"tool:upsert@{index}", run=call.run_id, key=call.idempotency_key,
                     attempt=call.attempt)
    hold(f"inside-{index}")
    return {"upserted": index, "key_seq": call.seq}


def compute(index: int) -> int:
    record_execution(f"step:compute@{index}")
    hold(f"inside-{index}")
    return index * index + 1


@tether.agent(tools=[lookup, upsert])
async def program_agent(ctx: tether.Context, program: list[str]) -> list[Any]:
    """Run ``program``: a list of ``llm``, ``read``, ``write``, ``step`` and ``now``."""
    results: list[Any] = []
    for index, op in enumerate(program):
        await hold_async(f"before-{index}")
        if op == "llm":
            reply = await ctx.llm(PROGRAM_MODEL, [{"role": "user", "content": f"step {index}"}])
            results.append(reply.text)
        elif op == "read":
            results.append(await ctx.tool("lookup", {"index": index}))
        elif op == "write":
            results.append(await ctx.tool("upsert", {"index": index}))
        elif op == "step":
            results.append(await ctx.step(f"compute-{index}", compute, index))
        elif op == "now":
            results.append({"now": ctx.now().isoformat()})
        else:
            raise ValueError(f"unknown program op {op!r}")
    await hold_async(f"before-{len(program)}")
    return results
