from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from tether.types import JSONObject, Reply

DeltaCallback = Callable[[str], None]
"""Receives streamed text as it arrives (published as events; the reply is journaled once)."""

RetryCallback = Callable[[int, str, float], None]
"""Told ``(failed attempt, error message, seconds until the next one)`` before a provider
retries a call. Text already streamed by the failed attempt is void: the next attempt streams
the reply again from its start."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as a model sees it: name, description and JSON schema of the arguments."""

    name: str
    description: str
    parameters: JSONObject

    def to_openai(self) -> JSONObject:
        """The spec in the OpenAI Chat Completions ``tools`` format."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One model call.

    ``run_id`` and ``call_index`` (the ordinal of this call among the run's model calls,
    counting replayed ones) identify the call stably across crashes; providers may ignore them.
    """

    messages: list[JSONObject]
    tools: list[ToolSpec] = field(default_factory=list)
    run_id: str = ""
    call_index: int = 0
    on_delta: DeltaCallback | None = None
    on_retry: RetryCallback | None = None


@runtime_checkable
class Model(Protocol):
    """Anything that turns messages and tool specs into a ``Reply``."""

    name: str

    async def complete(self, request: ModelRequest) -> Reply:
        """Answer with text and/or tool calls. Stream text through ``request.on_delta``."""
        ...
