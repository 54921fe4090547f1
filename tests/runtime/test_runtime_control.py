"""Controlling runs from outside: starting (validated, idempotent), cancelling, watching events."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import anyio
import pytest
from runtime_support import collect_events

import tether
from tether import Reply, ToolCall
from tether.errors import RunConflict, RunFailed, ToolError, UsageError
from tether.testing import ScriptedModel
from tether.types import RunStatus

pytestmark = pytest.mark.anyio


# -- starting --------------------------------------------------------------------------------

def counted_adder(executions: Counter[str]) -> tether.Agent:
    @tether.agent
    async def adder(ctx: tether.Context, a: int, b: int = 0) -> int:
        executions["adder"] += 1
        return a + b

    return adder


@pytest.mark.parametrize("bad_input", [
    {"a": "not a number"},  # wrong type
    {"b": 1},  # missing a
    {"a": 1, "c": 2},  # unknown parameter
])
async def test_start_with_input_that_does_not_fit_the_agent_creates_no_run(
        runtime: tether.Runtime, bad_input: dict[str, Any]) -> None:
    executions: Counter[str] = Counter()
    with pytest.raises(UsageError) as refused:
        await runtime.start(counted_adder(executions), bad_input, run_id="bad")
    assert "adder" in refused.value.message
    assert await runtime.store.get_run("bad") is None
    assert await runtime.store.list_runs() == []
    assert not executions


async def test_same_run_id_with_other_input_is_a_conflict(runtime: tether.Runtime) -> None:
    executions: Counter[str] = Counter()
    agent = counted_adder(executions)
    assert await runtime.run(agent, {"a": 1, "b": 2}, run_id="job-1") == 3
    with pytest.raises(RunConflict):
        await runtime.start(agent, {"a": 1, "b": 3}, run_id="job-1")

    @tether.agent
    async def subtractor(ctx: tether.Context, a: int, b: int) -> int:
        return a - b

    with pytest.raises(RunConflict):
        await runtime.start(subtractor, {"a": 1, "b": 2}, run_id="job-1")
    run = await runtime.get("job-1")
    assert run.input == {"a": 1, "b": 2}
    assert run.result == 3
    assert executions == Counter(adder=1)


async def test_same_run_id_and_same_input_is_the_same_run(runtime: tether.Runtime) -> None:
    executions: Counter[str] = Counter()
    agent = counted_adder(executions)
    first = await runtime.start(agent, {"a": 1, "b": 2}, run_id="job-2")
    again = await runtime.start(agent, {"a": 1, "b": 2}, run_id="job-2")
    assert again.run_id == first.run_id == "job-2"
    assert await first.result() == await again.result() == 3
    after_end = await runtime.start(agent, {"a": 1, "b": 2}, run_id="job-2")
    assert await after_end.result() == 3
    assert [run.run_id for run in await runtime.store.list_runs()] == ["job-2"]
    assert executions == Counter(adder=1)


async def test_handle_awaited_after_the_run_ended_returns_promptly(
        runtime: tether.Runtime) -> None:
    """A handle kept while the run finishes must not wait out a lease to notice."""
    agent = counted_adder(Counter())
    handle = await runtime.start(agent, {"a": 2})
    await anyio.sleep(0.2)  # the run ends before anyone waits on it
    with anyio.fail_after(3):
        assert await handle.result() == 2


async def test_handle_settled_after_the_run_parked_returns_promptly(
        runtime: tether.Runtime) -> None:
    """The handle's snapshot from start is stale by then; the notification was already sent."""
    @tether.agent
    async def patient(ctx: tether.Context) -> Any:
        return await ctx.wait("go")

    handle = await runtime.start(patient)
    await anyio.sleep(0.2)  # the run parks before anyone waits on it
    with anyio.fail_after(1):
        assert (await handle.settled()).status is RunStatus.WAITING


async def test_handle_created_before_a_cancel_returns_promptly(runtime: tether.Runtime) -> None:
    @tether.agent
    async def patient(ctx: tether.Context) -> Any:
        return await ctx.wait("go")

    handle = await runtime.start(patient)
    await anyio.sleep(0.2)
    await runtime.cancel(handle.run_id)
    with anyio.fail_after(1), pytest.raises(RunFailed):
        await handle.result()


async def test_handle_of_a_run_stopped_here_by_another_process_returns_promptly(
        runtime: tether.Runtime) -> None:
    """Waiters on a run executing here wait on its task, with no timer; when the task stops
    without settling the run (here: cancelled by another process, noticed by the heartbeat),
    they are woken to read the run from the store, not left until a lease runs out."""
    entered = anyio.Event()

    @tether.agent
    async def busy(ctx: tether.Context) -> Any:
        async def long_job() -> None:
            entered.set()
            await anyio.sleep(30)
        return await ctx.step("long_job", long_job)

    handle = await runtime.start(busy)
    await entered.wait()
    # What `tether runs cancel` does from another process: only the store is told.
    await runtime.store.cancel_run(handle.run_id, reason={"code": "run.cancelled",
                                                          "message": "from elsewhere"},
                                   now_ms=runtime.clock.now_ms())
    with anyio.fail_after(3), pytest.raises(RunFailed) as failed:
        await handle.result()
    assert failed.value.status == "cancelled"
    assert runtime.active_runs == 0


# -- cancelling ------------------------------------------------------------------------------

async def test_cancelling_a_running_run_interrupts_its_tool_and_ends_it_cancelled(
        runtime: tether.Runtime) -> None:
    entered = anyio.Event()
    interrupted: list[str] = []

    @tether.tool(side_effects=False)
    async def long_job() -> str:
        entered.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            interrupted.append("long_job")
            raise
        return "finished"

    @tether.agent(tools=[long_job])
    async def busy(ctx: tether.Context) -> str:
        try:
            return str(await ctx.tool("long_job"))
        except Exception:  # noqa: BLE001 - cancellation must get past this
            return "swallowed"

    handle = await runtime.start(busy)
    with anyio.fail_after(5):
        await entered.wait()
    cancelled = await runtime.cancel(handle.run_id, reason="operator changed their mind")
    assert cancelled.status is RunStatus.CANCELLED
    with anyio.fail_after(5), pytest.raises(RunFailed) as failed:
        await runtime.handle(handle.run_id).result()
    assert failed.value.status == "cancelled"
    with anyio.fail_after(5):
        while runtime.active_runs:
            await anyio.sleep(0.01)
    assert interrupted == ["long_job"]
    run = await runtime.get(handle.run_id)
    assert run.status is RunStatus.CANCELLED
    assert run.error is not None
    assert run.error["code"] == "run.cancelled"
    assert run.error["message"] == "operator changed their mind"


async def test_cancelling_a_waiting_run_ends_it_and_refuses_later_signals(
        runtime: tether.Runtime) -> None:
    @tether.agent
    async def patient(ctx: tether.Context) -> Any:
        return await ctx.wait("never")

    handle = await runtime.start(patient)
    assert (await handle.settled()).status is RunStatus.WAITING
    assert (await runtime.cancel(handle.run_id)).status is RunStatus.CANCELLED
    with anyio.fail_after(5), pytest.raises(RunFailed):
        await runtime.handle(handle.run_id).result()
    with pytest.raises(UsageError):
        await runtime.signal(handle.run_id, "never", 1)
    await anyio.sleep(0.2)  # several polls: nothing resumes it
    assert (await runtime.get(handle.run_id)).status is RunStatus.CANCELLED


@pytest.mark.parametrize("outcome", ["completed", "failed"])
async def test_cancelling_an_ended_run_changes_nothing(runtime: tether.Runtime,
                                                       outcome: str) -> None:
    @tether.agent
    async def ends(ctx: tether.Context, fail: bool) -> str:
        if fail:
            raise ValueError("broken")
        return "done"

    handle = await runtime.start(ends, {"fail": outcome == "failed"})
    with pytest.raises(RunFailed) if outcome == "failed" else contextlib.nullcontext():
        await handle.result()
    before = await runtime.get(handle.run_id)
    async with runtime.events.subscribe(handle.run_id) as events:
        after = await runtime.cancel(handle.run_id)
        await anyio.sleep(0.05)
        assert after == before
        assert await runtime.get(handle.run_id) == before
        assert str(before.status) == outcome
        with anyio.move_on_after(0.1):
            async for event in events:
                pytest.fail(f"cancelling an ended run published {event.type}")


# -- events ----------------------------------------------------------------------------------

async def test_subscribers_see_a_runs_events_in_order(runtime: tether.Runtime) -> None:
    failures: Counter[str] = Counter()

    @tether.tool(side_effects=False)
    def lookup(key: str) -> str:
        return key.upper()

    @tether.tool(retry=tether.Retry(max_attempts=2, initial_delay=0.01))
    def flaky() -> str:
        failures["flaky"] += 1
        if failures["flaky"] == 1:
            raise ConnectionError("first try fails")
        return "second try works"

    @tether.tool
    def broken() -> str:
        raise ValueError("always fails")

    model = ScriptedModel([Reply(tool_calls=[ToolCall("lookup", {"key": "k"}, "c1")])])

    @tether.agent(tools=[lookup, flaky, broken])
    async def eventful(ctx: tether.Context) -> str:
        reply = await ctx.llm(model, [{"role": "user", "content": "go"}], tools=["lookup"])
        found = await ctx.tool("lookup", reply.tool_calls[0].args)
        second = await ctx.tool("flaky")
        with contextlib.suppress(ToolError):
            await ctx.tool("broken")
        approval = await ctx.wait("approve")
        return f"{found} {second} {approval}"

    interesting = {"run.started", "run.resumed", "run.waiting", "run.completed", "llm.finished",
                   "tool.started", "tool.finished", "tool.failed", "tool.retrying"}
    async with runtime.events.subscribe() as events:
        handle = await runtime.start(eventful)
        first_part = await collect_events(events, handle.run_id, until=["run.waiting"])
        await runtime.signal(handle.run_id, "approve", "yes")
        second_part = await collect_events(events, handle.run_id)
    assert await handle.result() == "K second try works yes"
    seen = [(event.type, event.data.get("name")) for event in first_part + second_part
            if event.type in interesting]
    assert seen == [
        ("run.started", None),
        ("llm.finished", "scripted"),
        ("tool.started", "lookup"), ("tool.finished", "lookup"),
        ("tool.started", "flaky"), ("tool.retrying", "flaky"), ("tool.finished", "flaky"),
        ("tool.started", "broken"), ("tool.failed", "broken"),
        ("run.waiting", None),
        # the replay after the signal answers every effect from the journal: no tool events
        ("run.resumed", None),
        ("run.completed", None),
    ]
    ids = [event.id for event in first_part + second_part]
    assert ids == sorted(ids)
    assert all(event.run_id == handle.run_id for event in first_part + second_part)
