from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from tether.errors import ModelError
from tether.models._protocol import ModelRequest, ToolSpec
from tether.types import JSONObject, Reply

ScriptFunction = Callable[[list[JSONObject], list[ToolSpec]], Reply]


class ScriptedModel:
    """A deterministic model for tests, benchmarks and the demo.

    Args:
        script: replies given in order, or a function ``(messages, tools) -> Reply``.
        latency: seconds awaited per call, to stand in for a real model's latency.
        name: the model name journaled with each call.

    With a list, the n-th model call *of a run* gets ``script[n]``. Counting per run (not per
    process) keeps the script right when runs execute concurrently and when a crashed run is
    resumed in a new process, where the already journaled calls are replayed, not repeated.
    """

    def __init__(self, script: Sequence[Reply] | ScriptFunction, *, latency: float = 0.0,
                 name: str = "scripted") -> None:
        self.name = name
        self.latency = latency
        self._script = script
        self.calls = 0  # live calls served by this object, for tests and the demo

    async def complete(self, request: ModelRequest) -> Reply:
        """The scripted reply for this call (after ``latency`` seconds)."""
        if self.latency > 0:
            await asyncio.sleep(self.latency)  # anyio.sleep costs a backend lookup per call
        self.calls += 1
        if callable(self._script):
            reply = self._script(request.messages, request.tools)
        else:
            if request.call_index >= len(self._script):
                raise ModelError(
                    f"scripted model {self.name!r} has {len(self._script)} replies; the run asked "
                    f"for reply {request.call_index + 1}")
            reply = self._script[request.call_index]
        if request.on_delta is not None and reply.text:
            request.on_delta(reply.text)
        return reply
