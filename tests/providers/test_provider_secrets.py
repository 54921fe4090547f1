"""The API key reaches the provider and nothing else: not the journal, the events, the logs,
the errors or the run's record, whether the call succeeds or the key is refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import anyio
import pytest

import tether
from tether.errors import ModelAuthError, RunFailed
from tether.models import build_model

from .provider_support import KEY_VARIABLE, PROVIDERS, SENTINEL_KEY, MakeConfig
from .test_provider_calls import ask, weather

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("provider", PROVIDERS)]

WRONG_KEY = "sk-tether-wrong-sentinel-0b7d"


async def everything_written(rt: tether.Runtime, run_ids: list[str]) -> str:
    parts = []
    for run_id in run_ids:
        parts.append(json.dumps((await rt.get(run_id)).to_json()))
        parts.extend(json.dumps(r.to_json()) for r in await rt.journal(run_id))
    return "\n".join(parts)


async def test_the_key_appears_nowhere_tether_writes(
        provider: str, make_config: MakeConfig, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the SDKs' and the HTTP client's included
    config = make_config(provider)
    async with tether.Runtime(f"sqlite:///{tmp_path / 'tether.db'}",
                              models={"model": config}) as rt:
        async with rt.events.subscribe() as events:
            ok = await rt.start(weather, {"question": "weather in Paris and Rome?"})
            assert (await ok.result()) == "It is 21C in Paris and 19C in Rome."
            failed = await rt.start(ask, {"question": "nobody scripted this"})
            with pytest.raises(RunFailed) as not_found:
                await failed.result()
            seen = []
            while True:
                with anyio.move_on_after(0.05) as idle:
                    seen.append(json.dumps((await events.__aiter__().__anext__()).to_json()))
                if idle.cancelled_caught:
                    break
        written = await everything_written(rt, [ok.run_id, failed.run_id])
    assert any('"llm.delta"' in event for event in seen)  # the calls did stream
    for text in (written, "\n".join(seen), caplog.text, str(not_found.value)):
        assert SENTINEL_KEY not in text


async def test_a_refused_key_is_named_by_its_variable_never_by_its_value(
        provider: str, make_config: MakeConfig, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_VARIABLE, WRONG_KEY)
    async with tether.Runtime("memory://", models={"model": make_config(provider)}) as rt:
        handle = await rt.start(ask, {"question": "hello"})
        with pytest.raises(RunFailed) as failed:
            await handle.result()
        written = await everything_written(rt, [handle.run_id])
    error = failed.value.error or {}
    assert error["code"] == ModelAuthError.code
    assert f"check that the environment variable {KEY_VARIABLE} holds a valid key" in error["message"]
    for text in (written, caplog.text, str(failed.value), json.dumps(error)):
        assert WRONG_KEY not in text


async def test_a_missing_key_variable_is_a_clear_error_before_any_request(
        provider: str, make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VARIABLE)
    model = build_model("model", make_config(provider))
    assert SENTINEL_KEY not in repr(model)
    with pytest.raises(ModelAuthError, match=f"environment variable {KEY_VARIABLE} is not set"):
        await model.complete(tether.ModelRequest([{"role": "user", "content": "hello"}]))
    await model.aclose()
