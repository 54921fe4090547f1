"""Replay: a resumed run answers its recorded effects from the journal and acts only on new ones."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest

import tether
from conftest import fast_settings
from tether import Reply
from tether.errors import NonDeterminismError, RunFailed
from tether.testing import ScriptedModel
from tether.types import RunStatus

pytestmark = pytest.mark.anyio


class World:
    """Counts real executions of every effect an agent makes."""

    def __init__(self) -> None:
        self.executions: Counter[str] = Counter()
        self.model = ScriptedModel([Reply(text="model says hi")])
        self.hold = False  # make the last tool block until cancelled
        self.holding = anyio.Event()

    def agent(self) -> tether.Agent:
        world = self

        @tether.tool
        def double(n: int) -> int:
            world.executions["double"] += 1
            return n * 2

        @tether.tool(side_effects=False)
        async def finish(n: int) -> int:
            world.executions["finish"] += 1
            if world.hold:
                world.holding.set()
                await anyio.sleep(60)
            return n + 1

        def triple(n: int) -> int:
            world.executions["triple"] += 1
            return n * 3

        @tether.agent(tools=[double, finish])
        async def pipeline(ctx: tether.Context, n: int, pause: bool = False) -> dict[str, Any]:
            doubled = await ctx.tool("double", {"n": n})
            reply = await ctx.llm(world.model, [{"role": "user", "content": str(doubled)}])
            tripled = await ctx.step("triple", triple, doubled)
            signal = await ctx.wait("go") if pause else None
            finished = await ctx.tool("finish", {"n": tripled})
            return {"doubled": doubled, "text": reply.text, "tripled": tripled,
                    "finished": finished, "signal": signal}

        return pipeline


async def test_signalled_run_replays_recorded_effects_without_running_them_again(
        db_url: str) -> None:
    world = World()
    agent = world.agent()
    async with tether.Runtime(settings=fast_settings(db_url)) as rt:
        handle = await rt.start(agent, {"n": 5, "pause": True})
        parked = await handle.settled()
        assert parked.status is RunStatus.WAITING
        assert world.executions == Counter(double=1, triple=1)
        assert world.model.calls == 1

        await rt.signal(handle.run_id, "go", "ok")
        paused_result = await handle.result()

        assert world.executions == Counter(double=1, triple=1, finish=1)
        assert world.model.calls == 1
        uninterrupted = await rt.run(agent, {"n": 5})
    assert isinstance(uninterrupted, dict)
    assert paused_result == {**uninterrupted, "signal": "ok"}
    assert paused_result == {"doubled": 10, "text": "model says hi", "tripled": 30,
                             "finished": 31, "signal": "ok"}


async def test_run_interrupted_by_closing_the_runtime_is_finished_by_a_new_one_without_rework(
        sqlite_url: str) -> None:
    world = World()
    agent = world.agent()
    world.hold = True
    async with tether.Runtime(settings=fast_settings(sqlite_url)) as first:
        handle = await first.start(agent, {"n": 4})
        with anyio.fail_after(10):
            await world.holding.wait()
    # The first runtime is gone mid-tool; a second one on the same file takes the run over.
    assert world.executions == Counter(double=1, triple=1, finish=1)
    world.hold = False
    async with tether.Runtime(settings=fast_settings(sqlite_url), agents=[agent]) as second:
        with anyio.fail_after(10):
            resumed = await second.handle(handle.run_id).result()
        uninterrupted = await second.run(agent, {"n": 4})
    # Only the interrupted read-only tool ran again; the rest came from the journal.
    assert world.executions == Counter(double=2, triple=2, finish=3)
    assert world.model.calls == 2
    assert resumed == uninterrupted == {"doubled": 8, "text": "model says hi", "tripled": 24,
                                        "finished": 25, "signal": None}


async def test_closing_the_runtime_loses_no_lazily_recorded_effect(sqlite_url: str) -> None:
    """Model replies and read-only results are committed lazily; closing must flush them."""
    world = World()
    agent = world.agent()
    async with tether.Runtime(settings=fast_settings(sqlite_url)) as first:
        handle = await first.start(agent, {"n": 1, "pause": True})
        await handle.settled()
    async with tether.Runtime(settings=fast_settings(sqlite_url), agents=[agent]) as second:
        records = await second.journal(handle.run_id)
        assert [(r.seq, r.kind, r.state) for r in records] == [
            (1, "tool", "ok"), (2, "llm", "ok"), (3, "step", "ok"), (4, "wait", "started")]
        await second.signal(handle.run_id, "go", 7)
        result = await second.handle(handle.run_id).result()
        assert isinstance(result, dict)
        assert result["signal"] == 7
    assert world.model.calls == 1
    assert world.executions == Counter(double=1, triple=1, finish=1)


# -- non-determinism -------------------------------------------------------------------------

def changing_agent(plan: dict[str, Any], *, catch: bool = False) -> tether.Agent:
    """An agent whose first effect is whatever ``plan`` says when it runs."""

    @tether.tool(side_effects=False)
    def lookup(key: str) -> str:
        return f"found {key}"

    @tether.tool(side_effects=False)
    def search(key: str) -> str:
        return f"searched {key}"

    @tether.agent(tools=[lookup, search])
    async def changing(ctx: tether.Context) -> str:
        try:
            if plan["kind"] == "tool":
                first = await ctx.tool(plan["name"], {"key": plan["key"]})
            else:
                first = await ctx.step(plan["name"], lambda: "stepped")
        except NonDeterminismError:
            if not catch:
                raise
            return "carried on regardless"
        await ctx.wait("go")
        return str(first)

    return changing


@pytest.mark.parametrize(("changed", "recorded_text", "attempted_text"), [
    ({"name": "search"}, "tool 'lookup'", "tool 'search'"),
    ({"key": "other"}, "tool 'lookup'", "tool 'lookup'"),
    ({"kind": "step", "name": "lookup"}, "tool 'lookup'", "step 'lookup'"),
])
@pytest.mark.parametrize("catch", [False, True])
async def test_resuming_with_code_that_asks_for_another_effect_needs_attention(
        runtime: tether.Runtime, changed: dict[str, str], recorded_text: str,
        attempted_text: str, catch: bool) -> None:
    plan: dict[str, Any] = {"kind": "tool", "name": "lookup", "key": "a"}
    agent = changing_agent(plan, catch=catch)
    handle = await runtime.start(agent)
    assert (await handle.settled()).status is RunStatus.WAITING
    plan.update(changed)

    await runtime.signal(handle.run_id, "go")
    with pytest.raises(RunFailed):
        await handle.result()

    run = await runtime.get(handle.run_id)
    assert run.status is RunStatus.NEEDS_ATTENTION
    assert run.error is not None
    assert run.error["code"] == "journal.nondeterminism"
    message = run.error["message"]
    assert "seq 1:" in message
    recorded, attempted = message.split("the code now asks for")
    assert recorded_text in recorded
    assert attempted_text in attempted
    if "key" in changed:  # same tool, other arguments: the digests tell them apart
        digests = [part.split(")")[0] for part in message.split("request digest ")[1:]]
        assert len(digests) == 2
        assert digests[0] != digests[1]
    assert run.result is None


# -- deterministic helpers -------------------------------------------------------------------

async def test_now_uuid_and_random_are_the_same_on_replay(runtime: tether.Runtime) -> None:
    seen: list[tuple[str, str, float]] = []

    @tether.agent
    async def noisy(ctx: tether.Context) -> list[Any]:
        values = (ctx.now().isoformat(), str(ctx.uuid()), ctx.random())
        seen.append(values)
        await ctx.sleep(0)  # an effect between the values and the wait
        await ctx.wait("go")
        return list(values)

    handle = await runtime.start(noisy)
    await handle.settled()
    await anyio.sleep(0.02)  # the clock moves on before the replay
    await runtime.signal(handle.run_id, "go")
    result = await handle.result()

    assert len(seen) == 2
    assert seen[0] == seen[1]
    assert result == list(seen[0])
    other = await runtime.start(noisy)
    await other.settled()
    assert seen[2][1] != seen[0][1]  # another run draws other ids
    assert seen[2][2] != seen[0][2]
