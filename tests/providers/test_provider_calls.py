"""Model calls through both official SDKs against a real scripted model server: replies,
streaming, tool loops, retries that honour Retry-After, and failures a person can act on."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

import tether
from tether.agents import ToolLoop
from tether.errors import (
    ContextOverflow,
    ModelBadResponse,
    ModelNotFound,
    ModelRateLimited,
    ModelUnavailable,
    RunFailed,
)
from tether.models import ModelConfig, ModelRetry, build_model
from tether.runtime import Event
from tether.store import Record

from .provider_support import PROVIDERS, MakeConfig, ModelServer

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("provider", PROVIDERS)]


@tether.tool(side_effects=False)
def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city's name.
    """
    if city == "Atlantis":
        raise LookupError("no weather station in Atlantis")
    return {"Paris": "21C, sunny", "Rome": "19C, cloudy"}[city]


LOOP = ToolLoop("model", tools=[get_weather], system="You answer weather questions.")


@tether.agent(name="weather", tools=[get_weather])
async def weather(ctx: tether.Context, question: str) -> str:
    return await LOOP.run(ctx, question)


@tether.agent(name="ask")
async def ask(ctx: tether.Context, question: str) -> dict[str, Any]:
    reply = await ctx.llm("model", [{"role": "user", "content": question}])
    return {"text": reply.text, "usage": reply.usage.to_json()}


async def execute(config: ModelConfig, agent: tether.Agent, question: str, tmp_path: Path,
                  ) -> tuple[tether.Run, list[Record], list[Event]]:
    """Run ``agent`` on a real SQLite runtime with ``config`` as model "model", listening to
    its events (so model replies stream)."""
    async with tether.Runtime(f"sqlite:///{tmp_path / 'tether.db'}",
                              models={"model": config}) as rt:
        async with rt.events.subscribe() as events:
            handle = await rt.start(agent, {"question": question})
            with anyio.fail_after(30):
                run = await handle.settled()
            seen = []
            while True:
                with anyio.move_on_after(0.05) as idle:
                    seen.append(await events.__aiter__().__anext__())
                if idle.cancelled_caught:
                    break
        return run, await rt.journal(handle.run_id), seen


def as_dict(result: tether.types.JSON) -> dict[str, Any]:
    assert isinstance(result, dict)
    return result


def llm_records(records: Sequence[Record]) -> list[Record]:
    return [r for r in records if r.kind == "llm"]


async def test_a_plain_reply_is_returned_with_usage_and_cost(
        provider: str, make_config: MakeConfig) -> None:
    async with tether.Runtime("memory://", models={"model": make_config(provider)}) as rt:
        result = as_dict(await rt.run(ask, {"question": "hello"}))
    assert result["text"] == "Hi there! This reply is scripted and streamed in chunks."
    assert result["usage"]["input_tokens"] == 1000
    assert result["usage"]["output_tokens"] == 20
    assert result["usage"]["cost_usd"] > 0  # both model ids are in the genai-prices table


async def test_streamed_text_arrives_as_events_and_is_journaled_once(
        provider: str, make_config: MakeConfig, tmp_path: Path) -> None:
    run, records, events = await execute(make_config(provider), ask, "hello", tmp_path)
    assert run.status is tether.RunStatus.COMPLETED
    deltas = [e.data["text"] for e in events if e.type == "llm.delta"]
    assert len(deltas) > 1  # the server sends the text in 20-character chunks
    assert "".join(deltas) == "Hi there! This reply is scripted and streamed in chunks."
    (record,) = llm_records(records)
    assert json.loads(record.value or "")["text"] == "".join(deltas)
    assert json.loads(record.value or "")["usage"]["output_tokens"] == 20


async def test_parallel_tool_calls_run_and_their_results_reach_the_model(
        provider: str, make_config: MakeConfig, tmp_path: Path, model_server: ModelServer,
        test_id: str) -> None:
    run, records, _ = await execute(make_config(provider), weather, "weather in Paris and Rome?",
                                    tmp_path)
    assert run.result == "It is 21C in Paris and 19C in Rome."
    tools = [r for r in records if r.kind == "tool"]
    assert [json.loads(r.value or "") for r in tools] == ["21C, sunny", "19C, cloudy"]
    assert len(llm_records(records)) == 2
    # What the second request carried (aimock records both APIs in Chat Completions form,
    # so this also shows it read Anthropic's tool_use / tool_result blocks as meant).
    first, second = model_server.requests(test_id)
    calls = json.loads(llm_records(records)[0].value or "")["tool_calls"]
    messages = second["body"]["messages"]
    assert messages[0] == {"role": "system", "content": "You answer weather questions."}
    assert [c["id"] for c in messages[2]["tool_calls"]] == [c["id"] for c in calls]
    assert [(m["tool_call_id"], json.loads(m["content"])) for m in messages[3:]] == [
        (calls[0]["id"], "21C, sunny"), (calls[1]["id"], "19C, cloudy")]
    assert second["path"] == ("/v1/chat/completions" if provider == "openai" else "/v1/messages")
    assert first["body"]["tools"]


async def test_a_tool_error_goes_back_to_the_model_which_answers(
        provider: str, make_config: MakeConfig, tmp_path: Path, model_server: ModelServer,
        test_id: str) -> None:
    run, records, _ = await execute(make_config(provider), weather, "broken tool", tmp_path)
    assert run.result == "The tool failed, sorry."
    (tool,) = [r for r in records if r.kind == "tool"]
    assert tool.state == "error"
    assert "no weather station in Atlantis" in json.dumps(model_server.requests(test_id)[-1])


async def test_arguments_that_are_not_json_go_back_to_the_model_which_answers(
        provider: str, make_config: MakeConfig, tmp_path: Path, model_server: ModelServer,
        test_id: str) -> None:
    """A model may cut its arguments off. OpenAI-compatible servers pass the text through:
    the call is not made and the model is told. (The scripted server sends Anthropic an empty
    object instead, which the tool's schema refuses: the model is told too.)"""
    run, records, _ = await execute(make_config(provider), weather, "garbled arguments",
                                    tmp_path)
    assert run.result == "My call was garbled; I will ask again."
    told = json.dumps(model_server.requests(test_id)[-1])
    if provider == "openai":
        assert [r for r in records if r.kind == "tool"] == []  # never called
        garbled = json.loads(llm_records(records)[0].value or "")["tool_calls"][0]
        assert garbled["bad_arguments"] == '{"city": '
        assert "not a JSON object" in told
    else:
        assert "city" in told  # the schema's complaint: city is missing


async def test_a_429_is_retried_after_the_time_retry_after_asks_for(
        provider: str, make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(provider, retry=ModelRetry(initial_delay=0.01, max_delay=5))
    started = anyio.current_time()
    run, records, events = await execute(config, ask, "busy", tmp_path)
    waited = anyio.current_time() - started
    assert run.status is tether.RunStatus.COMPLETED
    assert as_dict(run.result)["text"] == "Done after a wait."
    (retrying,) = [e for e in events if e.type == "llm.retrying"]
    assert retrying.data["retry_in_seconds"] >= 1.0  # Retry-After: 1, not the 0.01 s backoff
    assert "429" in retrying.data["error"]
    assert waited >= 1.0
    (record,) = llm_records(records)
    assert record.attempts == 2
    assert json.loads(record.detail or "")["failed_attempts"][0]["attempt"] == 1


async def test_a_retry_after_longer_than_max_delay_fails_at_once(
        provider: str, make_config: MakeConfig) -> None:
    """aimock's rate-limit chaos answers 429 with Retry-After: 1 to every request."""
    config = make_config(provider, headers={"x-aimock-chaos-ratelimit": "1"},
                         retry=ModelRetry(max_attempts=5, max_delay=0.2))
    async with tether.Runtime("memory://", models={"model": config}) as rt:
        with anyio.fail_after(10), pytest.raises(RunFailed) as failed:
            await rt.run(ask, {"question": "hello"})
    error = failed.value.error or {}
    assert error["code"] == ModelRateLimited.code
    assert "asked to wait 1 s, longer than retry.max_delay" in error["message"]
    assert error["attempts"] == 1


async def test_rate_limits_that_never_end_fail_after_max_attempts(
        provider: str, make_config: MakeConfig) -> None:
    config = make_config(provider, headers={"x-aimock-chaos-ratelimit": "1"},
                         retry=ModelRetry(max_attempts=2, initial_delay=0, max_delay=1))
    model = build_model("model", config)
    try:
        with anyio.fail_after(10), pytest.raises(ModelRateLimited) as raised:
            await model.complete(tether.ModelRequest([{"role": "user", "content": "hello"}]))
    finally:
        await model.aclose()
    assert raised.value.attempts == 2
    assert "after 2 attempt(s)" in raised.value.message
    assert raised.value.retryable


async def test_a_malformed_reply_is_a_clear_error_not_retried(
        provider: str, make_config: MakeConfig, model_server: ModelServer, test_id: str) -> None:
    config = make_config(provider, headers={"x-aimock-chaos-malformed": "1"})
    model = build_model("model", config)
    try:
        with pytest.raises(ModelBadResponse) as raised:
            await model.complete(tether.ModelRequest([{"role": "user", "content": "hello"}]))
    finally:
        await model.aclose()
    message = raised.value.message
    assert "model 'model'" in message
    assert model_server.base_url(provider) in message
    assert "could not be read" in message
    assert len(model_server.requests(test_id)) == 1


async def test_a_stream_cut_mid_way_is_retried_and_journaled_once(
        provider: str, make_config: MakeConfig, tmp_path: Path) -> None:
    run, records, events = await execute(make_config(provider), ask, "cut", tmp_path)
    assert run.status is tether.RunStatus.COMPLETED
    assert as_dict(run.result)["text"] == "This long reply arrives whole on the second try."
    (record,) = llm_records(records)
    assert record.attempts == 2
    types = [e.type for e in events if e.type.startswith("llm.")]
    # The first attempt streamed a little, then the retry streamed the whole reply.
    assert types.count("llm.retrying") == 1
    (_retrying,) = [e for e in events if e.type == "llm.retrying"]
    assert types.index("llm.retrying") > types.index("llm.delta")
    after = [e.data["text"] for e in events if e.type == "llm.delta"][
        types.index("llm.retrying") - 1:]
    assert "".join(after) == "This long reply arrives whole on the second try."


async def test_dropped_connections_fail_after_the_retries_with_where_to_look(
        provider: str, make_config: MakeConfig, model_server: ModelServer, test_id: str) -> None:
    config = make_config(provider, headers={"x-aimock-chaos-disconnect": "1"},
                         retry=ModelRetry(max_attempts=3, initial_delay=0.01))
    model = build_model("model", config)
    try:
        with anyio.fail_after(10), pytest.raises(ModelUnavailable) as raised:
            await model.complete(tether.ModelRequest([{"role": "user", "content": "hello"}]))
    finally:
        await model.aclose()
    assert raised.value.attempts == 3
    assert "check that the server is running and that base_url is right" in raised.value.message
    assert len(model_server.requests(test_id)) == 3


async def test_an_unscripted_prompt_fails_at_once_with_a_404_that_says_what_to_check(
        provider: str, make_config: MakeConfig) -> None:
    async with tether.Runtime("memory://", models={"model": make_config(provider)}) as rt:
        with anyio.fail_after(10), pytest.raises(RunFailed) as failed:
            await rt.run(ask, {"question": "something nobody scripted"})
    error = failed.value.error or {}
    assert error["code"] == ModelNotFound.code
    assert "answered 404 for model" in error["message"]
    assert "check the model id" in error["message"]
    assert error["attempts"] == 1


async def test_a_context_overflow_is_not_retried_and_says_how_to_fix_it(
        provider: str, make_config: MakeConfig) -> None:
    model = build_model("model", make_config(provider))
    try:
        with pytest.raises(ContextOverflow) as raised:
            await model.complete(tether.ModelRequest([{"role": "user", "content": "too long"}]))
    finally:
        await model.aclose()
    assert "does not fit the model's context" in raised.value.message
    assert not raised.value.retryable


async def test_a_replayed_model_error_is_the_same_error(
        provider: str, make_config: MakeConfig, tmp_path: Path) -> None:
    """A failed call's error is journaled with its fields, and rebuilt from them on replay."""
    run, records, _ = await execute(make_config(provider), ask, "unscripted", tmp_path)
    (record,) = llm_records(records)
    error = tether.errors.error_from_json(json.loads(record.value or ""))
    assert isinstance(error, ModelNotFound)
    assert error.model == "model"
    assert error.status == 404
    assert run.status is tether.RunStatus.FAILED
