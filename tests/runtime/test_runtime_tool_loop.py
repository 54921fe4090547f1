"""ToolLoop, threads and child runs: the agent-level building blocks on top of the context."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import anyio
import pytest

import tether
from tether import Reply, ToolCall
from tether.agents import ToolLoop
from tether.errors import ChildRunFailed, RunFailed
from tether.testing import ScriptedModel
from tether.types import JSONObject, RunStatus

pytestmark = pytest.mark.anyio


@tether.tool(side_effects=False)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Recorder:
    """A model that answers with a function and keeps every conversation it was shown."""

    def __init__(self, answer: Any) -> None:
        self.seen: list[list[JSONObject]] = []
        self._answer = answer
        self.model = ScriptedModel(self._reply)

    def _reply(self, messages: list[JSONObject], tools: Any) -> Reply:
        self.seen.append(list(messages))
        reply: Reply = self._answer(messages)
        return reply


# -- parallel tool calls ---------------------------------------------------------------------

async def test_tool_calls_of_one_reply_run_in_parallel_and_are_journaled_in_model_order(
        runtime: tether.Runtime) -> None:
    started = {"slow": anyio.Event(), "quick": anyio.Event()}
    quick_done = anyio.Event()
    finished: list[str] = []

    @tether.tool(side_effects=False)
    async def slow() -> str:
        started["slow"].set()
        with anyio.fail_after(5):  # sequential calls would never see the other one start
            await started["quick"].wait()
            await quick_done.wait()
        finished.append("slow")
        return "slow result"

    @tether.tool
    async def quick() -> str:
        started["quick"].set()
        with anyio.fail_after(5):
            await started["slow"].wait()
        finished.append("quick")
        quick_done.set()
        return "quick result"

    model = ScriptedModel([
        Reply(tool_calls=[ToolCall("slow", {}, "c1"), ToolCall("quick", {}, "c2")]),
        Reply(text="both done")])
    loop = ToolLoop(model, tools=[slow, quick])

    @tether.agent(tools=[slow, quick])
    async def parallel(ctx: tether.Context) -> str:
        return await loop.run(ctx, "do both")

    handle = await runtime.start(parallel)
    assert await handle.result() == "both done"
    assert finished == ["quick", "slow"]  # the second call finished first ...
    records = await runtime.journal(handle.run_id)
    tools = [(r.seq, r.name, r.state) for r in records if r.kind == "tool"]
    llm_seqs = [r.seq for r in records if r.kind == "llm"]
    # ... yet the journal numbers the calls in the model's order, right after its reply.
    assert tools == [(llm_seqs[0] + 1, "slow", "ok"), (llm_seqs[0] + 2, "quick", "ok")]


# -- the model corrects itself -------------------------------------------------------------

@pytest.mark.parametrize(("bad_call", "complaint"), [
    (ToolCall("add", {"a": "seven", "b": 1}, "c1"), "a:"),  # wrong type
    (ToolCall("add", {"a": 7}, "c1"), "b:"),  # missing
    (ToolCall("add", {"a": 7, "b": 1, "c": 2}, "c1"), "c:"),  # extra
    (ToolCall("multiply", {"a": 7, "b": 1}, "c1"), "multiply"),  # unknown tool
    (ToolCall("add", {}, "c1", bad_arguments='{"a": 7, "b":'), "not a JSON object"),  # cut off
])
async def test_bad_tool_call_goes_back_to_the_model_which_can_correct_it(
        runtime: tether.Runtime, bad_call: ToolCall, complaint: str) -> None:
    def answer(messages: list[JSONObject]) -> Reply:
        last = messages[-1]
        if last["role"] == "user":
            return Reply(tool_calls=[bad_call])
        content = json.loads(last["content"])
        if isinstance(content, dict) and "error" in content:
            return Reply(tool_calls=[ToolCall("add", {"a": 7, "b": 1}, "c2")])
        return Reply(text=f"the answer is {content}")

    recorder = Recorder(answer)
    loop = ToolLoop(recorder.model, tools=[add])

    @tether.agent(tools=[add])
    async def calculator(ctx: tether.Context) -> str:
        return await loop.run(ctx, "what is 7 + 1?")

    assert await runtime.run(calculator) == "the answer is 8"
    assert len(recorder.seen) == 3
    error_message = recorder.seen[1][-1]
    assert error_message["role"] == "tool"
    assert error_message["tool_call_id"] == "c1"
    error = json.loads(error_message["content"])
    assert complaint in error["error"]
    assert error["type"] in ("ToolArgumentError", "UnknownTool")


async def test_tool_loop_that_never_answers_fails_the_run_at_max_steps(
        runtime: tether.Runtime) -> None:
    model = ScriptedModel(lambda messages, tools: Reply(
        tool_calls=[ToolCall("add", {"a": 1, "b": 1}, f"c{len(messages)}")]))
    loop = ToolLoop(model, tools=[add], max_steps=3)

    @tether.agent(tools=[add])
    async def chatty(ctx: tether.Context) -> str:
        return await loop.run(ctx, "loop forever")

    handle = await runtime.start(chatty)
    with pytest.raises(RunFailed):
        await handle.result()
    run = await runtime.get(handle.run_id)
    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert run.error["code"] == "agent.max_steps"
    assert model.calls == 3


# -- threads ---------------------------------------------------------------------------------

async def test_second_run_on_a_thread_sees_the_first_runs_messages(
        runtime: tether.Runtime) -> None:
    def answer(messages: list[JSONObject]) -> Reply:
        last = messages[-1]
        if last["role"] == "user" and last["content"] == "add 2 and 3":
            return Reply(tool_calls=[ToolCall("add", {"a": 2, "b": 3}, "t1")])
        if last["role"] == "tool":
            return Reply(text=f"it is {last['content']}")
        return Reply(text=f"I remember {len(messages) - 1} earlier messages")

    recorder = Recorder(answer)
    loop = ToolLoop(recorder.model, tools=[add], system="be brief")

    @tether.agent(tools=[add])
    async def chat(ctx: tether.Context, prompt: str) -> str:
        return await loop.run(ctx, prompt)

    first = await runtime.run(chat, {"prompt": "add 2 and 3"}, thread_id="t-1")
    assert first == "it is 5"
    second = await runtime.run(chat, {"prompt": "what did I ask?"}, thread_id="t-1")
    elsewhere = await runtime.run(chat, {"prompt": "what did I ask?"}, thread_id="t-2")

    # What the second run's model saw: the system prompt, the whole first exchange, the prompt.
    seen = recorder.seen[2]
    assert [m["role"] for m in seen] == ["system", "user", "assistant", "tool", "assistant",
                                         "user"]
    assert seen[1]["content"] == "add 2 and 3"
    assert seen[3]["content"] == "5"
    assert seen[4]["content"] == "it is 5"
    assert seen[5]["content"] == "what did I ask?"
    assert second == "I remember 5 earlier messages"
    assert elsewhere == "I remember 1 earlier messages"


# -- child runs ------------------------------------------------------------------------------

async def test_child_run_result_reaches_the_parent_and_replay_starts_no_second_child(
        runtime: tether.Runtime) -> None:
    executions: Counter[str] = Counter()

    @tether.agent
    async def child(ctx: tether.Context, n: int) -> int:
        executions["child"] += 1
        extra = await ctx.wait("go")
        return n * 10 + int(extra)

    @tether.agent
    async def parent(ctx: tether.Context) -> dict[str, Any]:
        executions["parent"] += 1
        kid = await ctx.start(child, {"n": 4})
        return {"child": kid.run_id, "result": await kid.result()}

    handle = await runtime.start(parent, run_id="p1")
    assert (await handle.settled()).status is RunStatus.WAITING
    child_id = "p1.1"
    assert (await runtime.get(child_id)).parent_run_id == "p1"
    assert (await runtime.handle(child_id).settled()).status is RunStatus.WAITING

    await runtime.signal(child_id, "go", 2)
    with anyio.fail_after(10):
        assert await runtime.handle("p1").result() == {"child": child_id, "result": 42}
    # The parent ran twice (start, then replay after the child ended), the child's start once.
    assert executions == Counter(parent=2, child=2)
    runs = await runtime.store.list_runs(agent="child")
    assert [run.run_id for run in runs] == [child_id]


async def test_failed_child_raises_child_run_failed_in_the_parent(runtime: tether.Runtime) -> None:
    @tether.agent
    async def doomed(ctx: tether.Context) -> str:
        raise ValueError("child broke")

    @tether.agent
    async def guardian(ctx: tether.Context) -> dict[str, Any]:
        kid = await ctx.start(doomed)
        try:
            await kid.result()
        except ChildRunFailed as exc:
            return {"code": exc.code, "run_id": exc.run_id, "status": exc.status,
                    "message": exc.message}
        return {}

    handle = await runtime.start(guardian)
    result = await handle.result()
    assert result == {"code": "run.child_failed", "run_id": f"{handle.run_id}.1",
                      "status": "failed",
                      "message": f"child run {handle.run_id}.1 ended failed: child broke"}
