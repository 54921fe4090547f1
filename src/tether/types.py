"""Plain value types shared by every layer: JSON, run status, model replies, runs.

Standard library only: every other module may import this one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NewType, TypeAlias

JSON: TypeAlias = dict[str, "JSON"] | list["JSON"] | str | int | float | bool | None
"""A value that survives ``json.dumps`` / ``json.loads`` unchanged."""

JSONObject: TypeAlias = dict[str, Any]
"""A decoded JSON object whose values are JSON (kept loose for ergonomics at call sites)."""

RunId = NewType("RunId", str)


class RunStatus(StrEnum):
    """Where a run is in its life. ``waiting`` and ``needs_attention`` hold no memory."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NEEDS_ATTENTION = "needs_attention"

    @property
    def is_terminal(self) -> bool:
        """Completed, failed or cancelled: the run will never change again."""
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)

    @property
    def is_settled(self) -> bool:
        """Terminal, or parked until something outside the run acts (a timer, a signal, a person)."""
        return self not in (RunStatus.PENDING, RunStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a model call consumed, as the provider reported them, and what they cost.

    ``input_tokens`` counts every input token, cached ones included (``cache_read_tokens``
    were served from the provider's prompt cache, ``cache_write_tokens`` written to it), so
    the four counts mean the same for every provider. ``cost_usd`` is None when no price is
    known for the model (a local server, say).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None

    def to_json(self) -> JSONObject:
        """The usage as a JSON object (``cost_usd`` only when known)."""
        data: JSONObject = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                            "cache_read_tokens": self.cache_read_tokens,
                            "cache_write_tokens": self.cache_write_tokens}
        if self.cost_usd is not None:
            data["cost_usd"] = self.cost_usd
        return data

    @classmethod
    def from_json(cls, data: JSONObject) -> Usage:
        """Read usage back from ``to_json`` output (missing counts are 0, a missing cost None),
        so records written before a field existed stay readable."""
        cost = data.get("cost_usd")
        get = data.get
        return cls(int(get("input_tokens", 0)), int(get("output_tokens", 0)),
                   int(get("cache_read_tokens", 0)), int(get("cache_write_tokens", 0)),
                   None if cost is None else float(cost))


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A model's request to call one tool. ``id`` pairs the call with its result message.

    ``bad_arguments`` holds what the model sent as arguments when that was not a JSON object
    (``args`` is then empty): the tool is not called, and the model is told, so it can try
    again, as it is for arguments that do not fit the tool's schema.
    """

    name: str
    args: JSONObject = field(default_factory=dict)
    id: str = ""
    bad_arguments: str | None = None

    def to_json(self) -> JSONObject:
        """The call as a JSON object."""
        data: JSONObject = {"name": self.name, "args": self.args, "id": self.id}
        if self.bad_arguments is not None:  # only then: earlier journals read the same
            data["bad_arguments"] = self.bad_arguments
        return data


@dataclass(frozen=True, slots=True)
class Reply:
    """What ``ctx.llm`` returns: text and/or tool calls, and the usage of the call."""

    text: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)

    def to_json(self) -> JSONObject:
        """The reply as it is journaled."""
        return {"text": self.text, "tool_calls": [c.to_json() for c in self.tool_calls],
                "usage": self.usage.to_json()}

    @classmethod
    def from_json(cls, data: JSONObject) -> Reply:
        """Read a reply back from its journaled form."""
        return cls(
            text=data.get("text"),
            tool_calls=[ToolCall(c["name"], c.get("args") or {}, c.get("id", ""),
                                 c.get("bad_arguments"))
                        for c in data.get("tool_calls") or []],
            usage=Usage.from_json(data.get("usage") or {}),
        )

    def to_message(self) -> JSONObject:
        """The reply as an OpenAI-style assistant message, to append to the conversation."""
        message: JSONObject = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": json.dumps(c.args)
                              if c.bad_arguments is None else c.bad_arguments}}
                for c in self.tool_calls
            ]
        return message


@dataclass(frozen=True, slots=True)
class Run:
    """One invocation of an agent, as the store holds it."""

    run_id: str
    agent: str
    agent_version: str
    agent_ref: str
    input: JSONObject
    status: RunStatus
    result: JSON = None
    error: JSONObject | None = None
    thread_id: str | None = None
    parent_run_id: str | None = None
    tenant: str = "default"
    principal: str = "default"
    created_at_ms: int = 0
    updated_at_ms: int = 0
    wake_at_ms: int | None = None
    waiting_for: str | None = None
    owner: str | None = None

    def to_json(self) -> JSONObject:
        """The run as a JSON object (``tether runs show --json``)."""
        return {
            "run_id": self.run_id, "agent": self.agent, "agent_version": self.agent_version,
            "agent_ref": self.agent_ref, "input": self.input, "status": str(self.status),
            "result": self.result, "error": self.error, "thread_id": self.thread_id,
            "parent_run_id": self.parent_run_id, "tenant": self.tenant,
            "principal": self.principal, "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms, "wake_at_ms": self.wake_at_ms,
            "waiting_for": self.waiting_for, "owner": self.owner,
        }
