"""Agents the command-line tests start by name: ``tether run cli_agents:NAME``.

The module is importable as ``cli_agents`` when ``tests/cli`` is on the path: pytest puts it
there for in-process tests, and subprocess tests pass it in ``PYTHONPATH``.

``charge`` (not idempotent) and ``charge_once`` (idempotent) have a side effect. Environment
variables steer them: ``CLI_AGENTS_CHARGE`` = ``hang`` (wait until cancelled) or ``crash``
(kill the process) before the charge happens, and ``CLI_AGENTS_LEDGER`` names a file where
each real execution of ``quote`` and of a charge is written down.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio

import tether
from tether import Reply, ToolCall, Usage
from tether.testing import ScriptedModel

CRASH_EXIT_CODE = 70

MODEL = ScriptedModel([
    Reply(tool_calls=[ToolCall("lookup", {"key": "color"}, "call-1")], usage=Usage(11, 3)),
    Reply(text="the color is teal", usage=Usage(20, 5)),
], name="scripted-chat")


@tether.tool(side_effects=False)
def lookup(key: str) -> str:
    """Look a value up in a tiny table."""
    return {"color": "teal"}.get(key, "unknown")


def _note(line: str) -> None:
    ledger = os.environ.get("CLI_AGENTS_LEDGER")
    if ledger:
        with Path(ledger).open("a", encoding="utf-8") as out:
            out.write(line + "\n")


async def _charge(cents: int, call: tether.ToolContext) -> dict[str, object]:
    mode = os.environ.get("CLI_AGENTS_CHARGE", "")
    if mode == "hang":
        await anyio.sleep(60)
    elif mode == "crash":
        os._exit(CRASH_EXIT_CODE)
    _note(f"charge {call.idempotency_key} {cents}")
    return {"charged_cents": cents, "key": call.idempotency_key}


@tether.tool(side_effects=False)
def quote(amount: int) -> int:
    """Price an amount in cents (read-only: replayed from the journal, never re-run)."""
    _note(f"quote {amount}")
    return amount * 100


@tether.tool(side_effects=True)
async def charge(cents: int, call: tether.ToolContext) -> dict[str, object]:
    """Charge a card: not idempotent, so an interrupted call needs a person to settle it."""
    return await _charge(cents, call)


@tether.tool(side_effects=True, idempotent=True)
async def charge_once(cents: int, call: tether.ToolContext) -> dict[str, object]:
    """Charge a card through an API that deduplicates by idempotency key."""
    return await _charge(cents, call)


@tether.agent(tools=[lookup])
async def chat(ctx: tether.Context, question: str = "what color is it?") -> str:
    """Ask the model, call the tool it picks, and return its final answer."""
    messages: list[dict[str, object]] = [{"role": "user", "content": question}]
    first = await ctx.llm(MODEL, messages, tools=["lookup"])
    call = first.tool_calls[0]
    value = await ctx.tool(call.name, call.args)
    messages += [first.to_message(), {"role": "tool", "content": value}]
    final = await ctx.llm(MODEL, messages)
    return final.text or ""


@tether.agent
async def echo(ctx: tether.Context, text: str, times: int = 1) -> dict[str, object]:
    """Return the input, to show how ``--input`` reaches the agent."""
    return {"text": text * times, "run_id": ctx.run_id}


@tether.agent
async def broken(ctx: tether.Context) -> None:
    raise ValueError("the widget is broken")


@tether.agent
async def approval(ctx: tether.Context) -> dict[str, object]:
    """Wait for a person to send the ``approve`` signal."""
    data = await ctx.wait("approve")
    return {"approved": data}


@tether.agent
async def napper(ctx: tether.Context) -> str:
    """Sleep durably for an hour: parked with a timer far in the future."""
    await ctx.sleep(3600)
    return "rested"


@tether.agent
async def remember(ctx: tether.Context, text: str) -> list[str]:
    """Add ``text`` to the run's thread; return every message the thread held before, then it."""
    history = await ctx.thread_messages()
    ctx.add_thread_messages([{"role": "user", "content": text}])
    return [str(message["content"]) for message in history] + [text]


@tether.agent(tools=[quote, charge])
async def pay(ctx: tether.Context, amount: int) -> dict[str, object]:
    """Quote, then charge once (not idempotent)."""
    cents = await ctx.tool("quote", {"amount": amount})
    receipt = await ctx.tool("charge", {"cents": cents})
    return {"receipt": receipt}


@tether.agent(tools=[quote, charge_once])
async def pay_safely(ctx: tether.Context, amount: int) -> dict[str, object]:
    """Quote, then charge through the idempotent tool."""
    cents = await ctx.tool("quote", {"amount": amount})
    receipt = await ctx.tool("charge_once", {"cents": cents})
    return {"receipt": receipt}


not_an_agent = "just a string"
