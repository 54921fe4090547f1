from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import anyio

from tether.errors import PolicyDenied, ToolArgumentError, ToolError, ToolLoopExhausted
from tether.models import Model
from tether.runtime import Context
from tether.tools import Tool
from tether.types import JSONObject, Reply, ToolCall


class ToolLoop:
    """The classic agent loop: ask the model; run the tools it calls (in parallel when it calls
    several); give it the results, errors included, so it can correct itself; repeat until it
    answers without calling a tool.

    Args:
        model: a model object or the name of one given to the runtime.
        tools: the tools the model may call (they must also be the agent's tools).
        system: the system prompt.
        max_steps: most model calls per run; then the loop fails with a ``ToolLoopExhausted``.

    With a thread (``thread_id`` on the run), the conversation so far is loaded first and
    this run's messages are added to it when the run completes.

    Example::

        loop = ToolLoop("gpt", tools=[lookup_order], system="You are a support agent.")

        @tether.agent(tools=[lookup_order])
        async def support(ctx: tether.Context, question: str) -> str:
            return await loop.run(ctx, question)
    """

    def __init__(self, model: str | Model, tools: Sequence[Tool] = (), system: str | None = None,
                 max_steps: int = 20) -> None:
        self.model = model
        self.tools = list(tools)
        self.system = system
        self.max_steps = max_steps

    async def run(self, ctx: Context, prompt: str) -> str:
        """Answer ``prompt``; returns the model's final text."""
        history = await ctx.thread_messages()
        new: list[JSONObject] = [{"role": "user", "content": prompt}]
        system = [{"role": "system", "content": self.system}] if self.system else []
        for _ in range(self.max_steps):
            reply = await ctx.llm(self.model, system + history + new, tools=self.tools or None)
            new.append(reply.to_message())
            if not reply.tool_calls:
                ctx.add_thread_messages(new)
                return reply.text or ""
            new.extend(await self._call_tools(ctx, reply))
        raise ToolLoopExhausted(f"no final answer after {self.max_steps} model calls")

    async def _call_tools(self, ctx: Context, reply: Reply) -> list[JSONObject]:
        # Create every call first: each takes its journal seq now, in the model's order. A
        # call whose arguments were not a JSON object is not made; the model is told instead.
        calls = [(call, None if call.bad_arguments is not None else ctx.tool(call.name, call.args))
                 for call in reply.tool_calls]
        results: list[JSONObject] = [{} for _ in calls]

        async def one(index: int, call: ToolCall, pending: Any) -> None:
            try:
                if pending is None:
                    raise ToolArgumentError(call.name, (
                        f"the arguments of this call to {call.name} were not a JSON object "
                        f"({(call.bad_arguments or '')[:200]!r}); call it again with a JSON object "
                        "that fits its schema"))
                content = json.dumps(await pending)
            except ToolError as exc:  # the model sees the error and may try again
                content = json.dumps({"error": exc.message, "type": exc.error_type})
            except PolicyDenied as exc:  # and a refusal, so it can answer without that tool
                content = json.dumps({"error": exc.message, "type": "PolicyDenied"})
            results[index] = {"role": "tool", "tool_call_id": call.id, "name": call.name,
                              "content": content}

        if len(calls) == 1:
            await one(0, *calls[0])
        else:
            async with anyio.create_task_group() as group:
                for index, (call, pending) in enumerate(calls):
                    group.start_soon(one, index, call, pending)
        return results
