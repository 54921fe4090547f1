"""Anthropic Messages through the official ``anthropic`` SDK (async client).

Tether's conversation is OpenAI-style; this module converts it both ways:

    system messages                  -> the ``system`` parameter
    assistant ``tool_calls``         -> ``tool_use`` blocks (and back, in the reply)
    ``role: tool`` messages          -> ``tool_result`` blocks in a user turn
                                        (``is_error: true`` on the message marks a tool error)
    consecutive turns of one role    -> one turn (the API wants user and assistant to alternate)
"""

from __future__ import annotations

import json
from typing import Any

from tether.errors import ModelBadResponse, ModelUnavailable
from tether.models._failures import CallSite, SDKErrors, tool_call
from tether.models._protocol import ModelRequest
from tether.models._provider import ProviderModel
from tether.types import JSONObject, Reply, ToolCall, Usage

DEFAULT_MAX_TOKENS = 4096


class AnthropicModel(ProviderModel):
    """A model behind the Anthropic Messages API."""

    provider = "anthropic"
    extra = "anthropic"
    default_base_url = "https://api.anthropic.com"

    def _make_client(self, key: str, base_url: str | None) -> tuple[Any, SDKErrors]:
        import anthropic
        import httpx2

        client = anthropic.AsyncAnthropic(
            api_key=key, base_url=base_url, timeout=self.config.timeout, max_retries=0,
            default_headers=self.config.headers or None)
        return client, SDKErrors(status=anthropic.APIStatusError,
                                 connection=anthropic.APIConnectionError,
                                 timeout=anthropic.APITimeoutError,
                                 transport=httpx2.TransportError)

    async def _attempt(self, client: Any, site: CallSite, request: ModelRequest) -> Reply:
        system, messages = to_anthropic(request.messages)
        params: JSONObject = {"model": self.config.model, "messages": messages,
                              "max_tokens": self.config.max_tokens or DEFAULT_MAX_TOKENS}
        if system:
            params["system"] = system
        if request.tools:
            params["tools"] = [{"name": spec.name, "description": spec.description,
                                "input_schema": spec.parameters} for spec in request.tools]
        if request.on_delta is None:
            return _reply(await client.messages.create(**params), site)
        stream = await client.messages.create(**params, stream=True)
        return await _streamed(stream, site, request)


def to_anthropic(messages: list[JSONObject]) -> tuple[str, list[JSONObject]]:
    """OpenAI-style messages as Anthropic's ``(system, messages)``."""
    system: list[str] = []
    turns: list[JSONObject] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text(message.get("content")))
            continue
        if role == "tool":
            content = message.get("content")
            block: JSONObject = {"type": "tool_result", "tool_use_id": message.get("tool_call_id", ""),
                                 "content": content if isinstance(content, str) else json.dumps(content)}
            if message.get("is_error"):
                block["is_error"] = True
            _append(turns, "user", [block])
        elif role == "assistant":
            blocks: list[JSONObject] = []
            if message.get("content"):
                blocks.append({"type": "text", "text": _text(message["content"])})
            for call in message.get("tool_calls") or ():
                function = call.get("function", {})
                arguments = function.get("arguments") or "{}"
                blocks.append({"type": "tool_use", "id": call.get("id", ""),
                               "name": function.get("name", ""),
                               "input": json.loads(arguments) if isinstance(arguments, str)
                               else arguments})
            _append(turns, "assistant", blocks)
        else:
            _append(turns, "user", [{"type": "text", "text": _text(message.get("content"))}])
    return "\n\n".join(system), turns


def _text(content: Any) -> str:
    """Text of a message's content: a string, or OpenAI content parts of type text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content
                   if isinstance(part, dict) and part.get("type") == "text")


def _append(turns: list[JSONObject], role: str, blocks: list[JSONObject]) -> None:
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _usage(raw: Any, output_tokens: int | None = None) -> Usage:
    if raw is None:
        return Usage()
    read = getattr(raw, "cache_read_input_tokens", None) or 0
    written = getattr(raw, "cache_creation_input_tokens", None) or 0
    # Anthropic counts cached input apart from input_tokens; Tether's input_tokens holds all.
    return Usage(input_tokens=(raw.input_tokens or 0) + read + written,
                 output_tokens=output_tokens if output_tokens is not None
                 else (raw.output_tokens or 0),
                 cache_read_tokens=read, cache_write_tokens=written)


def _reply(message: Any, site: CallSite) -> Reply:
    content = getattr(message, "content", None)
    if content is None:
        raise site.error(ModelBadResponse, "the reply holds no content; check that base_url "
                                           "points at an Anthropic Messages API")
    text = [block.text for block in content if block.type == "text"]
    calls = [ToolCall(block.name, dict(block.input or {}), block.id)
             for block in content if block.type == "tool_use"]
    return Reply(text="".join(text) if text else None, tool_calls=calls,
                 usage=_usage(message.usage))


async def _streamed(stream: Any, site: CallSite, request: ModelRequest) -> Reply:
    on_delta = request.on_delta
    assert on_delta is not None
    text: list[str] = []
    blocks: dict[int, list[str]] = {}  # index of a tool_use block -> [id, name, json parts...]
    start_usage: Any = None
    output_tokens: int | None = None
    stopped = False
    async with stream:
        async for event in stream:
            kind = event.type
            if kind == "message_start":
                start_usage = event.message.usage
            elif kind == "content_block_start" and event.content_block.type == "tool_use":
                block = event.content_block
                blocks[event.index] = [block.id, block.name]
            elif kind == "content_block_delta":
                delta = event.delta
                if delta.type == "text_delta" and delta.text:
                    text.append(delta.text)
                    on_delta(delta.text)
                elif delta.type == "input_json_delta" and event.index in blocks:
                    blocks[event.index].append(delta.partial_json)
            elif kind == "message_delta":
                output_tokens = getattr(event.usage, "output_tokens", None)
            elif kind == "message_stop":
                stopped = True
    if not stopped:
        raise site.error(ModelUnavailable, "the stream ended before the reply was complete")
    calls = []
    for _, parts in sorted(blocks.items()):
        calls.append(tool_call(parts[1], "".join(parts[2:]), parts[0], site))
    return Reply(text="".join(text) if text else None, tool_calls=calls,
                 usage=_usage(start_usage, output_tokens))
