"""OpenAI Chat Completions through the official ``openai`` SDK (async client).

Chat Completions, not the Responses API: it is what every OpenAI-compatible server speaks
(vLLM, llama.cpp, Ollama, LM Studio, gateways). Tether's messages are already in its format;
they are only trimmed to the fields the API defines, since strict servers refuse extra ones.
"""

from __future__ import annotations

import json
from typing import Any

from tether.errors import ModelBadResponse, ModelUnavailable
from tether.models._failures import CallSite, SDKErrors, tool_call
from tether.models._protocol import ModelRequest, ToolSpec
from tether.models._provider import ProviderModel
from tether.types import JSONObject, Reply, Usage

# The fields Chat Completions defines per role; anything else in a message stays in Tether.
_FIELDS = {
    "system": ("role", "content", "name"),
    "developer": ("role", "content", "name"),
    "user": ("role", "content", "name"),
    "assistant": ("role", "content", "tool_calls", "name"),
    "tool": ("role", "content", "tool_call_id"),
}


class OpenAIModel(ProviderModel):
    """A model behind the Chat Completions API (OpenAI or any compatible server)."""

    provider = "openai"
    extra = "openai"
    default_base_url = "https://api.openai.com/v1"

    def _make_client(self, key: str, base_url: str | None) -> tuple[Any, SDKErrors]:
        import httpx2
        import openai

        client = openai.AsyncOpenAI(
            api_key=key, base_url=base_url, timeout=self.config.timeout, max_retries=0,
            default_headers=self.config.headers or None)
        return client, SDKErrors(status=openai.APIStatusError,
                                 connection=openai.APIConnectionError,
                                 timeout=openai.APITimeoutError, transport=httpx2.TransportError)

    async def _attempt(self, client: Any, site: CallSite, request: ModelRequest) -> Reply:
        params: JSONObject = {"model": self.config.model,
                              "messages": [_message(m) for m in request.messages]}
        if request.tools:
            params["tools"] = [spec.to_openai() for spec in request.tools]
        if self.config.max_tokens is not None:
            params["max_tokens"] = self.config.max_tokens
        if request.on_delta is None:
            return _reply(await client.chat.completions.create(**params), site, request.tools)
        stream = await client.chat.completions.create(
            **params, stream=True, stream_options={"include_usage": True})
        return await _streamed(stream, site, request)


def _message(message: JSONObject) -> JSONObject:
    fields = _FIELDS.get(str(message.get("role")))
    if fields is None:
        return message  # a role we do not know: the server decides
    trimmed = {key: message[key] for key in fields if key in message}
    if message.get("role") == "tool" and not isinstance(trimmed.get("content"), str):
        trimmed["content"] = json.dumps(trimmed.get("content"))
    return trimmed


def _usage(raw: Any) -> Usage:
    if raw is None:
        return Usage()
    details = getattr(raw, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    return Usage(input_tokens=raw.prompt_tokens or 0, output_tokens=raw.completion_tokens or 0,
                 cache_read_tokens=cached)


def _reply(completion: Any, site: CallSite, tools: list[ToolSpec]) -> Reply:
    choices = getattr(completion, "choices", None)
    if not choices:
        raise site.error(ModelBadResponse, "the reply holds no choices; check that base_url "
                                           "points at a Chat Completions API")
    message = choices[0].message
    calls = [tool_call(call.function.name, call.function.arguments, call.id, site)
             for call in message.tool_calls or ()]
    return Reply(text=message.content, tool_calls=calls, usage=_usage(completion.usage))


async def _streamed(stream: Any, site: CallSite, request: ModelRequest) -> Reply:
    on_delta = request.on_delta
    assert on_delta is not None
    text: list[str] = []
    calls: dict[int, list[str]] = {}  # index -> [id, name, arguments...]
    usage = Usage()
    finished = False
    async with stream:
        async for chunk in stream:
            if chunk.usage is not None:
                usage = _usage(chunk.usage)
            for choice in chunk.choices:
                finished = finished or choice.finish_reason is not None
                delta = choice.delta
                if delta.content:
                    text.append(delta.content)
                    on_delta(delta.content)
                for call in delta.tool_calls or ():
                    parts = calls.setdefault(call.index, ["", ""])
                    if call.id:
                        parts[0] = call.id
                    if call.function is not None:
                        if call.function.name:
                            parts[1] = call.function.name
                        if call.function.arguments:
                            parts.append(call.function.arguments)
    if not finished:
        raise site.error(ModelUnavailable, "the stream ended before the reply was complete")
    tool_calls = [tool_call(parts[1], "".join(parts[2:]), parts[0], site)
                  for _, parts in sorted(calls.items())]
    return Reply(text="".join(text) if text else None, tool_calls=tool_calls, usage=usage)
