"""The kill switch: ``tether runs cancel --all --tenant T`` stops every live run of T in
another process, in-flight tool calls included, records who did it, and leaves every
journal consistent; other tenants' runs go on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from gov_support import governance

import tether
from conftest import fast_settings
from tether.governance import cancel_runs, live_runs
from tether.types import RunStatus

pytestmark = pytest.mark.anyio

STARTED: list[str] = []
FINISHED: list[str] = []


@tether.tool()
async def slow_transfer(ctx: tether.ToolContext, amount: int) -> str:
    """Moves money, slowly."""
    STARTED.append(ctx.idempotency_key)
    await anyio.sleep(3600)
    FINISHED.append(ctx.idempotency_key)
    return "moved"


@tether.agent(name="support", version="1", tools=[slow_transfer])
async def mover(ctx: tether.Context, amount: int) -> str:
    return str(await ctx.tool("slow_transfer", {"amount": amount}))


async def wait_until(predicate: object, seconds: float = 20.0) -> None:
    with anyio.fail_after(seconds):
        while not predicate():  # type: ignore[operator]
            await anyio.sleep(0.02)


async def test_cancel_all_stops_a_hundred_running_runs_with_tools_in_flight(
        tmp_path: Path) -> None:
    STARTED.clear()
    FINISHED.clear()
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    async with tether.Runtime(settings=fast_settings(db, lease_seconds=0.3),
                              agents=[mover]) as rt:
        acme = [await rt.start(mover, {"amount": i}, tenant="acme") for i in range(100)]
        globex = [await rt.start(mover, {"amount": i}, tenant="globex") for i in range(5)]
        await wait_until(lambda: len(STARTED) == 105)
        done = subprocess.run(
            [str(Path(sys.executable).parent / "tether"), "--db", db, "runs", "cancel", "--all",
             "--tenant", "acme", "--principal", "ops", "--reason", "runaway spend"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "cancelled 100 run(s)"
        await wait_until(lambda: rt.active_runs == 5)  # heartbeats stopped acme's tasks
        assert FINISHED == []
        for handle in acme:
            run = await rt.get(handle.run_id)
            assert run.status is RunStatus.CANCELLED
            assert run.error is not None
            assert (run.error["by"], run.error["message"]) == ("ops", "runaway spend")
            records = await rt.journal(handle.run_id)
            # The intent of the interrupted call, and nothing after it: consistent.
            assert [(r.kind, r.state) for r in records] == [("tool", "started")]
        for handle in globex:
            assert (await rt.get(handle.run_id)).status is RunStatus.RUNNING
        left = await live_runs(rt, tenant="globex")
        assert len(await cancel_runs(rt, left, by="ops", reason="test over")) == 5


async def test_cancellations_are_audited_with_who_did_it(tmp_path: Path,
                                                         sqlite_url: str) -> None:
    gov = governance(tmp_path)

    @tether.agent(name="support", version="1")
    async def waiter(ctx: tether.Context) -> str:
        return str(await ctx.wait("never"))

    async with tether.Runtime(settings=fast_settings(sqlite_url, principal="alice",
                                                     tenant="acme"),
                              stages=gov.stages()) as rt:
        handles = [await rt.start(waiter) for _ in range(3)]
        for handle in handles:
            await handle.settled()
        cancelled = await cancel_runs(rt, await live_runs(rt, agent="support"), by="bob",
                                      reason="kill switch", audit=gov.audit)
        assert sorted(run.run_id for run in cancelled) == sorted(h.run_id for h in handles)
        bodies = [row.body for row in await rt.store.load_audit("acme")]
        records = [b for b in bodies if '"type":"run.cancelled"' in b]
        assert len(records) == 3
        assert all('"principal":"bob"' in b for b in records)
