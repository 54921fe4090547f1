from __future__ import annotations

import pytest

import tether
from tether import Reply, ToolCall
from tether.testing import ScriptedModel

pytestmark = pytest.mark.anyio


@tether.tool(side_effects=False)
def add(a: int, b: int) -> int:
    return a + b


@tether.agent(tools=[add])
async def adder(ctx: tether.Context, a: int, b: int) -> int:
    total: int = await ctx.tool("add", {"a": a, "b": b})
    return total


async def test_run_returns_the_agent_result(runtime: tether.Runtime) -> None:
    assert await runtime.run(adder, {"a": 2, "b": 40}) == 42


async def test_journal_records_each_effect_once(runtime: tether.Runtime) -> None:
    model = ScriptedModel([Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 2}, "c1")]),
                           Reply(text="three")])

    @tether.agent(tools=[add])
    async def chat(ctx: tether.Context) -> str:
        first = await ctx.llm(model, [{"role": "user", "content": "1+2?"}], tools=["add"])
        total = await ctx.tool("add", first.tool_calls[0].args)
        final = await ctx.llm(model, [{"role": "tool", "content": str(total)}])
        return final.text or ""

    handle = await runtime.start(chat)
    assert await handle.result() == "three"
    records = await runtime.journal(handle.run_id)
    assert [(r.seq, r.kind, r.name, r.state) for r in records] == [
        (1, "llm", "scripted", "ok"), (2, "tool", "add", "ok"), (3, "llm", "scripted", "ok")]
