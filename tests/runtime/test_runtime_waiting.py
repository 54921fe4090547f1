"""Durable timers and signals: short waits stay in memory, long ones park the run in the store."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import anyio
import pytest
from runtime_support import collect_events

import tether
from conftest import fast_settings
from tether.errors import WaitTimeout
from tether.types import RunStatus

pytestmark = pytest.mark.anyio


def sleeper(executions: Counter[str], seconds: float) -> tether.Agent:
    @tether.tool
    def before() -> str:
        executions["before"] += 1
        return "before"

    @tether.agent(tools=[before])
    async def napper(ctx: tether.Context) -> str:
        first = await ctx.tool("before")
        await ctx.sleep(seconds)
        executions["after"] += 1
        return f"{first} and after"

    return napper


# -- timers ----------------------------------------------------------------------------------

async def test_short_sleep_waits_in_memory_without_parking(db_url: str) -> None:
    executions: Counter[str] = Counter()
    agent = sleeper(executions, 0.3)
    settings = fast_settings(db_url, memory_sleep_seconds=1.0)
    async with tether.Runtime(settings=settings) as rt, rt.events.subscribe() as events:
        started = time.monotonic()
        handle = await rt.start(agent)
        await anyio.sleep(0.15)
        mid = await rt.get(handle.run_id)
        assert mid.status is RunStatus.RUNNING
        assert rt.active_runs == 1
        assert await handle.result() == "before and after"
        assert time.monotonic() - started >= 0.3
        seen = await collect_events(events, handle.run_id)
    assert "run.waiting" not in [event.type for event in seen]
    assert "run.resumed" not in [event.type for event in seen]
    assert executions == Counter(before=1, after=1)


@pytest.mark.parametrize("seconds", [0.0, 0.001])
async def test_sleep_shorter_than_a_commit_interval_finishes_at_once(
        runtime: tether.Runtime, seconds: float) -> None:
    """The sleep's record is written twice (started, then ok) before the first is committed."""
    executions: Counter[str] = Counter()
    started = time.monotonic()
    with anyio.fail_after(5):
        assert await runtime.run(sleeper(executions, seconds)) == "before and after"
    assert time.monotonic() - started < 1
    assert executions == Counter(before=1, after=1)


async def test_long_sleep_parks_the_run_and_the_runtime_resumes_it_when_due(db_url: str) -> None:
    executions: Counter[str] = Counter()
    agent = sleeper(executions, 0.4)
    async with tether.Runtime(settings=fast_settings(db_url, memory_sleep_seconds=0.1)) as rt:
        before_ms = rt.clock.now_ms()
        handle = await rt.start(agent)
        parked = await handle.settled()
        assert parked.status is RunStatus.WAITING
        stored = await rt.get(handle.run_id)
        assert stored.status is RunStatus.WAITING
        assert stored.wake_at_ms is not None
        assert before_ms + 400 <= stored.wake_at_ms <= rt.clock.now_ms() + 400
        assert stored.owner is None
        assert rt.active_runs == 0  # no task holds the run while it sleeps
        assert executions == Counter(before=1)

        assert await handle.result() == "before and after"
        assert rt.clock.now_ms() >= stored.wake_at_ms
    assert executions == Counter(before=1, after=1)


async def test_run_parked_on_a_timer_survives_the_runtime_and_is_finished_by_the_next(
        sqlite_url: str) -> None:
    executions: Counter[str] = Counter()
    agent = sleeper(executions, 0.5)
    settings = fast_settings(sqlite_url, memory_sleep_seconds=0.1)
    async with tether.Runtime(settings=settings) as first:
        handle = await first.start(agent)
        assert (await handle.settled()).status is RunStatus.WAITING
    async with tether.Runtime(settings=settings, agents=[agent]) as second:
        run = await second.get(handle.run_id)
        assert run.status is RunStatus.WAITING
        assert run.wake_at_ms is not None
        with anyio.fail_after(10):
            assert await second.handle(handle.run_id).result() == "before and after"
        assert second.clock.now_ms() >= run.wake_at_ms
    assert executions == Counter(before=1, after=1)


# -- signals ---------------------------------------------------------------------------------

async def test_wait_parks_the_run_and_a_signal_resumes_it_with_its_data(
        runtime: tether.Runtime) -> None:
    @tether.agent
    async def approver(ctx: tether.Context) -> Any:
        decision = await ctx.wait("approval")
        return {"decision": decision}

    handle = await runtime.start(approver)
    parked = await handle.settled()
    assert parked.status is RunStatus.WAITING
    stored = await runtime.get(handle.run_id)
    assert stored.waiting_for == "approval"
    assert stored.wake_at_ms is None
    assert runtime.active_runs == 0

    await runtime.signal(handle.run_id, "approval", {"ok": True, "by": "ada"})
    assert await handle.result() == {"decision": {"ok": True, "by": "ada"}}


async def test_signal_sent_before_the_wait_is_consumed_without_parking(
        runtime: tether.Runtime) -> None:
    proceed = anyio.Event()

    async def gate() -> bool:
        await proceed.wait()
        return True

    @tether.agent
    async def early(ctx: tether.Context) -> Any:
        await ctx.step("gate", gate)
        return await ctx.wait("data")

    async with runtime.events.subscribe() as events:
        handle = await runtime.start(early)
        await runtime.signal(handle.run_id, "data", [1, 2, 3])
        proceed.set()
        assert await handle.result() == [1, 2, 3]
        seen = [event.type for event in await collect_events(events, handle.run_id)]
    assert "run.waiting" not in seen
    assert "run.resumed" not in seen
    records = await runtime.journal(handle.run_id)
    assert [(r.kind, r.name, r.state, r.value) for r in records][-1] == (
        "wait", "data", "ok", "[1,2,3]")


@pytest.mark.parametrize("send_early", [False, True])
async def test_two_waits_on_one_name_consume_two_signals_in_order(
        runtime: tether.Runtime, send_early: bool) -> None:
    proceed = anyio.Event()

    async def gate() -> None:
        await proceed.wait()

    @tether.agent
    async def twice(ctx: tether.Context) -> list[Any]:
        await ctx.step("gate", gate)
        first = await ctx.wait("next")
        second = await ctx.wait("next")
        return [first, second]

    handle = await runtime.start(twice)
    if send_early:
        await runtime.signal(handle.run_id, "next", "one")
        await runtime.signal(handle.run_id, "next", "two")
        proceed.set()
    else:
        proceed.set()
        assert (await handle.settled()).status is RunStatus.WAITING
        await runtime.signal(handle.run_id, "next", "one")
        await runtime.signal(handle.run_id, "next", "two")
    assert await handle.result() == ["one", "two"]


async def test_wait_timeout_is_raised_into_the_agent_and_replayed_from_the_journal(
        runtime: tether.Runtime) -> None:
    caught: list[str] = []

    @tether.agent
    async def impatient(ctx: tether.Context) -> str:
        try:
            answer = await ctx.wait("reply", timeout=0.2)
        except WaitTimeout as exc:
            caught.append(exc.signal)
            answer = "no reply"
        # Park once more, so the run is replayed from the top after the timeout.
        extra = await ctx.wait("extra")
        return f"{answer} / {extra}"

    handle = await runtime.start(impatient)
    parked = await handle.settled()
    assert parked.status is RunStatus.WAITING
    assert (await runtime.get(handle.run_id)).wake_at_ms is not None
    with anyio.fail_after(10):
        while (await runtime.get(handle.run_id)).waiting_for != "extra":
            await anyio.sleep(0.02)
    assert caught == ["reply"]
    records = await runtime.journal(handle.run_id)
    assert records[0].kind == "wait"
    assert records[0].state == "error"
    assert records[0].to_json()["value"]["code"] == "run.wait_timeout"

    # A late reply changes nothing: the replay sees the recorded timeout again.
    await runtime.signal(handle.run_id, "reply", "too late")
    await runtime.signal(handle.run_id, "extra", "x")
    assert await handle.result() == "no reply / x"
    assert caught == ["reply", "reply"]


# -- suspension holds no memory --------------------------------------------------------------

async def test_ten_thousand_waiting_runs_hold_no_tasks_and_all_complete_when_signalled() -> None:
    count = 10_000

    @tether.agent
    async def parked(ctx: tether.Context, n: int) -> int:
        extra = await ctx.wait("go")
        return int(n) + int(extra)

    async with tether.Runtime(settings=fast_settings("memory://")) as rt:
        await anyio.sleep(0.05)  # the runtime's own loops are up
        tasks_before = len(asyncio.all_tasks())
        for n in range(count):
            await rt.start(parked, {"n": n}, run_id=f"r{n}")
        with anyio.fail_after(30):
            while rt.active_runs:
                await anyio.sleep(0.01)
        waiting = await rt.store.list_runs(status=RunStatus.WAITING, limit=2 * count)
        assert len(waiting) == count
        assert rt.active_runs == 0
        assert len(asyncio.all_tasks()) <= tasks_before

        for n in range(count):
            await rt.signal(f"r{n}", "go", 1)
        with anyio.fail_after(30):
            await rt.until_idle(check_interval=0.01)
        done = await rt.store.list_runs(status=RunStatus.COMPLETED, limit=2 * count)
        assert sorted(run.result for run in done) == [n + 1 for n in range(count)]  # type: ignore[type-var]
        assert rt.active_runs == 0
