"""Tool calls: timeouts, retries, concurrency caps, and intents made durable before side effects."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import anyio
import pytest
from runtime_support import committed_rows

import tether
from conftest import fast_settings
from tether.errors import ToolArgumentError, ToolError, ToolTimeout
from tether.testing import FakeClock, ScriptedModel
from tether.types import Reply, RunStatus

pytestmark = pytest.mark.anyio


def error_of(exc: ToolError) -> dict[str, Any]:
    return {"type": type(exc).__name__, "code": exc.code, "attempts": exc.attempts,
            "message": exc.message}


# -- timeouts --------------------------------------------------------------------------------

async def test_async_tool_past_its_timeout_is_cancelled_and_raises_tool_timeout(
        runtime: tether.Runtime) -> None:
    outcome: list[str] = []

    @tether.tool(timeout=0.1, side_effects=False)
    async def stuck() -> str:
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            outcome.append("cancelled")
            raise
        outcome.append("finished")
        return "never"

    @tether.agent(tools=[stuck])
    async def caller(ctx: tether.Context) -> dict[str, Any]:
        try:
            await ctx.tool("stuck")
        except ToolTimeout as exc:
            return error_of(exc)
        return {}

    started = time.monotonic()
    error = await runtime.run(caller)
    assert time.monotonic() - started < 2
    assert isinstance(error, dict)
    assert error["type"] == "ToolTimeout"
    assert error["code"] == "tool.timeout"
    assert "0.1" in str(error["message"])
    assert outcome == ["cancelled"]


async def test_sync_tool_past_its_timeout_raises_while_its_thread_finishes_later(
        runtime: tether.Runtime) -> None:
    release = threading.Event()
    finished = threading.Event()

    @tether.tool(timeout=0.1, side_effects=False)
    def blocking() -> str:
        release.wait(5)
        finished.set()
        return "late"

    @tether.agent(tools=[blocking])
    async def caller(ctx: tether.Context) -> str:
        try:
            return str(await ctx.tool("blocking"))
        except ToolTimeout as exc:
            return exc.code

    started = time.monotonic()
    assert await runtime.run(caller) == "tool.timeout"
    assert time.monotonic() - started < 2
    assert not finished.is_set()  # Python cannot kill the thread: it is still running
    release.set()
    assert await anyio.to_thread.run_sync(finished.wait, 5)


# -- retries ---------------------------------------------------------------------------------

class Flaky:
    """A tool body that fails ``failures`` times with ``error``, then succeeds."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.contexts: list[tether.ToolContext] = []

    def __call__(self, ctx: tether.ToolContext) -> str:
        self.contexts.append(ctx)
        if len(self.contexts) <= self.failures:
            raise self.error(f"failure {len(self.contexts)}")
        return f"worked on attempt {ctx.attempt}"


def retrying_agent(body: Flaky, retry: tether.Retry) -> tether.Agent:
    @tether.tool(retry=retry, idempotent=True)
    def charge(ctx: tether.ToolContext) -> str:
        return body(ctx)

    @tether.agent(tools=[charge])
    async def payer(ctx: tether.Context) -> Any:
        try:
            return await ctx.tool("charge")
        except ToolError as exc:
            return error_of(exc)

    return payer


async def test_retries_back_off_within_jitter_and_record_every_attempt(db_url: str) -> None:
    clock = FakeClock()
    body = Flaky(failures=4)
    retry = tether.Retry(max_attempts=5, initial_delay=1.0, backoff=2.0, max_delay=3.0,
                         jitter=0.5)
    async with tether.Runtime(settings=fast_settings(db_url), clock=clock) as rt:
        handle = await rt.start(retrying_agent(body, retry))
        assert await handle.result() == "worked on attempt 5"
        records = await rt.journal(handle.run_id)

    # Nominal delays 1, 2, 4 -> capped at 3, 8 -> capped at 3; jitter takes off up to half.
    assert len(clock.sleeps) == 4
    for delay, nominal in zip(clock.sleeps, [1.0, 2.0, 3.0, 3.0], strict=True):
        assert nominal * 0.5 <= delay <= nominal
    assert clock.sleeps[0] <= clock.sleeps[1]  # the bands of the first two do not overlap

    assert [ctx.attempt for ctx in body.contexts] == [1, 2, 3, 4, 5]
    keys = {ctx.idempotency_key for ctx in body.contexts}
    assert keys == {f"{handle.run_id}:1"}
    assert {ctx.seq for ctx in body.contexts} == {1}

    [record] = records
    assert record.state == "ok"
    assert record.attempts == 5
    detail = record.to_json()["detail"]
    failed = detail["failed_attempts"]
    assert [item["attempt"] for item in failed] == [1, 2, 3, 4]
    assert [item["error"] for item in failed] == [f"ConnectionError: failure {n}"
                                                  for n in range(1, 5)]
    assert [item["retry_in_seconds"] for item in failed] == pytest.approx(clock.sleeps, abs=1e-3)


async def test_retry_without_jitter_waits_exactly_the_backoff_up_to_the_cap() -> None:
    clock = FakeClock()
    body = Flaky(failures=5)
    retry = tether.Retry(max_attempts=6, initial_delay=0.5, backoff=3.0, max_delay=5.0,
                         jitter=0.0)
    async with tether.Runtime(settings=fast_settings("memory://"), clock=clock) as rt:
        assert await rt.run(retrying_agent(body, retry)) == "worked on attempt 6"
    assert clock.sleeps == pytest.approx([0.5, 1.5, 4.5, 5.0, 5.0])


async def test_exhausted_retries_fail_the_call_with_the_last_error() -> None:
    clock = FakeClock()
    body = Flaky(failures=10)
    retry = tether.Retry(max_attempts=3, initial_delay=1.0, jitter=0.0)
    async with tether.Runtime(settings=fast_settings("memory://"), clock=clock) as rt:
        error = await rt.run(retrying_agent(body, retry))
    assert error == {"type": "ToolError", "code": "tool.failed", "attempts": 3,
                     "message": "ConnectionError: failure 3"}
    assert len(body.contexts) == 3
    assert clock.sleeps == [1.0, 2.0]


@pytest.mark.parametrize(("error", "attempts"), [(ConnectionError, 3), (ValueError, 1)])
async def test_retry_on_limits_which_errors_are_retried(error: type[Exception],
                                                        attempts: int) -> None:
    clock = FakeClock()
    body = Flaky(failures=10, error=error)
    retry = tether.Retry(max_attempts=3, retry_on=(ConnectionError,), jitter=0.0)
    async with tether.Runtime(settings=fast_settings("memory://"), clock=clock) as rt:
        result = await rt.run(retrying_agent(body, retry))
    assert isinstance(result, dict)
    assert result["attempts"] == attempts
    assert result["message"] == f"{error.__name__}: failure {attempts}"
    assert len(body.contexts) == attempts
    assert len(clock.sleeps) == attempts - 1


async def test_argument_errors_are_never_retried() -> None:
    clock = FakeClock()
    calls: Counter[str] = Counter()
    retry = tether.Retry(max_attempts=5, jitter=0.0)

    @tether.tool(retry=retry)
    def strict(n: int) -> int:
        calls["strict"] += 1
        if n < 0:
            raise ToolArgumentError("strict", "n must not be negative")
        return n

    @tether.agent(tools=[strict])
    async def caller(ctx: tether.Context, args: dict[str, Any]) -> Any:
        try:
            return await ctx.tool("strict", args)
        except ToolError as exc:
            return error_of(exc)

    async with tether.Runtime(settings=fast_settings("memory://"), clock=clock) as rt:
        from_schema = await rt.run(caller, {"args": {"n": "many"}})
        from_body = await rt.run(caller, {"args": {"n": -1}})
    assert isinstance(from_schema, dict)
    assert from_schema["type"] == "ToolArgumentError"
    assert from_schema["attempts"] == 1
    assert isinstance(from_body, dict)
    assert from_body["type"] == "ToolArgumentError"
    assert from_body["attempts"] == 1
    assert calls == Counter(strict=1)  # the schema error never reached the body
    assert clock.sleeps == []


# -- concurrency -----------------------------------------------------------------------------

async def test_max_concurrency_caps_calls_of_a_tool_across_runs(runtime: tether.Runtime) -> None:
    in_flight = 0
    peak = 0
    go = anyio.Event()

    @tether.tool(max_concurrency=2, side_effects=False)
    async def scarce(n: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        with anyio.fail_after(5):
            await go.wait()
        await anyio.sleep(0.01)
        in_flight -= 1
        return n

    @tether.agent(tools=[scarce])
    async def user(ctx: tether.Context, n: int) -> int:
        return int(await ctx.tool("scarce", {"n": n}))

    handles = [await runtime.start(user, {"n": n}) for n in range(6)]
    with anyio.fail_after(5):
        while peak < 2:
            await anyio.sleep(0.01)
    await anyio.sleep(0.1)  # the other four runs have time to try
    assert peak == 2
    go.set()
    results = [await runtime.handle(handle.run_id).result() for handle in handles]
    assert results == list(range(6))
    assert peak == 2


# -- intents ---------------------------------------------------------------------------------

async def test_side_effecting_tool_runs_only_after_its_intent_is_committed(
        runtime: tether.Runtime) -> None:
    seen_inside: list[list[tuple[int, str, str, str]]] = []
    model = ScriptedModel([Reply(text="please send it")])

    @tether.tool
    async def send_email(to: str, ctx: tether.ToolContext) -> str:
        seen_inside.append(await committed_rows(runtime, ctx.run_id))
        return f"sent to {to}"

    @tether.agent(tools=[send_email])
    async def mailer(ctx: tether.Context) -> str:
        await ctx.llm(model, [{"role": "user", "content": "mail ada"}])
        return str(await ctx.tool("send_email", {"to": "ada"}))

    handle = await runtime.start(mailer)
    assert await handle.result() == "sent to ada"
    assert seen_inside == [[(1, "llm", "scripted", "ok"), (2, "tool", "send_email", "started")]]
    records = await runtime.journal(handle.run_id)
    assert [(r.seq, r.state) for r in records] == [(1, "ok"), (2, "ok")]


async def test_read_only_tool_writes_no_intent(runtime: tether.Runtime) -> None:
    seen_inside: list[list[tuple[int, str, str, str]]] = []

    @tether.tool(side_effects=False)
    async def peek(ctx: tether.ToolContext) -> str:
        seen_inside.append(await committed_rows(runtime, ctx.run_id))
        return "peeked"

    @tether.tool
    async def act() -> str:
        return "acted"

    @tether.agent(tools=[peek, act])
    async def looker(ctx: tether.Context) -> str:
        await ctx.tool("act")
        return str(await ctx.tool("peek"))

    handle = await runtime.start(looker)
    assert await handle.result() == "peeked"
    [inside] = seen_inside
    assert [seq for seq, *_ in inside if seq >= 2] == []  # no intent for the read-only call
    records = await runtime.journal(handle.run_id)
    assert [(r.seq, r.name, r.state) for r in records] == [(1, "act", "ok"), (2, "peek", "ok")]


async def test_step_result_is_durable_before_the_agent_goes_on(runtime: tether.Runtime) -> None:
    seen_after: list[list[tuple[int, str, str, str]]] = []

    @tether.agent
    async def stepper(ctx: tether.Context) -> int:
        value = await ctx.step("pick", lambda: 42)
        seen_after.append(await committed_rows(runtime, ctx.run_id))
        return int(value)

    handle = await runtime.start(stepper)
    assert await handle.result() == 42
    assert seen_after == [[(1, "step", "pick", "ok")]]
    [record] = await runtime.journal(handle.run_id)
    assert record.value == "42"
    assert (await runtime.get(handle.run_id)).status is RunStatus.COMPLETED
