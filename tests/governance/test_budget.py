"""Budgets as ledgers: concurrent runs cannot overspend, reservations reconcile to exactly
what was spent, exhaustion reaches the agent (or a person), and a SIGKILL resets nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from budget_agents import COST_MICRO, model, one_step_a_run, spender, ten_calls_a_day
from gov_support import governance

import tether
from conftest import fast_settings
from tether.errors import ConfigError
from tether.governance import BudgetConfig, RunBudget, worst_case_tokens
from tether.store import SQLiteStore
from tether.types import RunStatus

pytestmark = pytest.mark.anyio

HERE = Path(__file__).resolve().parent


def day_scope(rt: tether.Runtime, unit: str) -> str:
    import datetime

    day = datetime.datetime.fromtimestamp(rt.clock.now_ms() / 1000, tz=datetime.UTC)
    return f"tenant:acme:{day:%Y-%m-%d}:{unit}"


async def test_fifty_concurrent_runs_spend_exactly_a_budget_of_ten_calls(
        tmp_path: Path, db_url: str) -> None:
    gov = governance(tmp_path, budgets=ten_calls_a_day())
    async with tether.Runtime(settings=fast_settings(db_url, principal="alice", tenant="acme"),
                              stages=gov.stages(), models=[model()]) as rt:
        handles = [await rt.start(spender, {"calls": 1}) for _ in range(50)]
        results: list[Any] = [await handle.result() for handle in handles]
        answered = [r for r in results if r == ["ok"]]
        refused = [r for r in results if r[0].startswith("over budget")]
        assert (len(answered), len(refused)) == (10, 40)
        balances = await rt.store.ledger_balances([day_scope(rt, "steps"),
                                                   day_scope(rt, "cost_micro_usd")])
        # Reserved at the worst case, reconciled to the provider's usage: exactly 10 calls.
        assert balances == {day_scope(rt, "steps"): 10,
                            day_scope(rt, "cost_micro_usd"): 10 * COST_MICRO}
        refusal = next(r for r in await rt.journal(handles[results.index(refused[0])].run_id)
                       if r.state == "error")
        assert refusal.to_json()["value"]["code"] == "limit.budget"
        held = next(r for r in await rt.journal(handles[results.index(answered[0])].run_id)
                    if r.kind == "llm").to_json()
        assert held["detail"]["budget"]["price_table"] == "config"
        assert held["detail"]["budget"]["actual"] == {"tokens": 150,
                                                      "cost_micro_usd": COST_MICRO}
        audit = [row.body for row in await rt.store.load_audit("acme")]
        assert any('"type":"budget.charged"' in body and '"price_table":"config"' in body
                   for body in audit)


async def test_a_person_raises_an_exhausted_budget_and_the_run_goes_on(
        tmp_path: Path, sqlite_url: str) -> None:
    gov = governance(tmp_path, budgets=one_step_a_run(on_exhausted="approval"))
    (tmp_path / "policies" / "budget.cedar").write_text(
        '@id("supervisors-raise-budgets")\npermit (principal in Role::"supervisor", '
        'action == Action::"approve", resource == Tool::"budget");\n')
    async with tether.Runtime(settings=fast_settings(sqlite_url, principal="alice",
                                                     tenant="acme"),
                              stages=gov.stages(), models=[model()]) as rt:
        handle = await rt.start(spender, {"calls": 2})
        parked = await handle.settled()
        assert parked.status is RunStatus.WAITING
        (approval,) = await rt.store.list_approvals(status="pending")
        assert approval.tool == "budget"
        assert approval.approval_id.endswith(":budget")
        await gov.decide_approval(rt.store, approval.approval_id, approve=True, by="bob",
                                  reason="one more call is fine")
        assert await rt.handle(handle.run_id).result() == ["ok", "ok"]
        audit = "".join(row.body for row in await rt.store.load_audit("acme"))
        assert '"type":"budget.raised"' in audit
        assert '"by":"bob"' in audit


async def test_a_denied_raise_reaches_the_agent_as_budget_exceeded(
        tmp_path: Path, sqlite_url: str) -> None:
    gov = governance(tmp_path, budgets=one_step_a_run(on_exhausted="approval"))
    (tmp_path / "policies" / "budget.cedar").write_text(
        '@id("supervisors-raise-budgets")\npermit (principal in Role::"supervisor", '
        'action == Action::"approve", resource == Tool::"budget");\n')
    async with tether.Runtime(settings=fast_settings(sqlite_url, principal="alice",
                                                     tenant="acme"),
                              stages=gov.stages(), models=[model()]) as rt:
        handle = await rt.start(spender, {"calls": 2})
        await handle.settled()
        (approval,) = await rt.store.list_approvals(status="pending")
        await gov.decide_approval(rt.store, approval.approval_id, approve=False, by="bob",
                                  reason="enough for today")
        result: Any = await rt.handle(handle.run_id).result()
        assert result[0] == "ok"
        assert result[1].startswith("over budget: tenant:acme:run:")


async def test_the_spent_amount_survives_a_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "tether.db"
    script = f"""
import sys, time, anyio
sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent)!r}]
import tether
from budget_agents import model, spender, ten_calls_a_day
from conftest import fast_settings
from gov_support import governance
from pathlib import Path

async def main():
    gov = governance(Path({str(tmp_path)!r}), budgets=ten_calls_a_day())
    async with tether.Runtime(settings=fast_settings("sqlite:///{db}", principal="alice",
                              tenant="acme"), stages=gov.stages(), models=[model()]) as rt:
        for _ in range(6):
            await rt.run(spender, {{"calls": 1}})
        print("spent", flush=True)
        await anyio.sleep(3600)
anyio.run(main)
"""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=tmp_path)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "spent"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    gov = governance(tmp_path, budgets=ten_calls_a_day())
    async with tether.Runtime(settings=fast_settings(f"sqlite:///{db}", principal="alice",
                                                     tenant="acme"),
                              stages=gov.stages(), models=[model()]) as rt:
        assert (await rt.store.ledger_balances([day_scope(rt, "steps")]))[
            day_scope(rt, "steps")] == 6
        results = [await rt.run(spender, {"calls": 1}) for _ in range(6)]
        assert results.count(["ok"]) == 4  # 6 before the kill + 4 = the budget of 10


async def test_a_run_past_its_wall_time_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    from tether.testing import FakeClock

    clock = FakeClock()
    gov = governance(tmp_path, clock=clock, budgets=BudgetConfig(run=RunBudget(wall_seconds=5)))

    @tether.agent(name="support", version="1")
    async def slow(ctx: tether.Context) -> str:
        await ctx.llm("scripted", [{"role": "user", "content": "a"}])
        clock.advance(10)
        try:
            await ctx.llm("scripted", [{"role": "user", "content": "b"}])
        except tether.errors.BudgetExceeded as exc:
            return exc.scope
        return "not refused"

    async with tether.Runtime(settings=fast_settings(sqlite_url, principal="alice",
                                                     tenant="acme"),
                              stages=gov.stages(), models=[model()], clock=clock) as rt:
        assert str(await rt.run(slow)).endswith(":wall_ms")


def test_the_worst_case_is_the_input_estimate_plus_max_tokens() -> None:
    class Call:
        def __init__(self) -> None:
            self.messages = [{"role": "user", "content": "x" * 400}]
            self.tools: list[object] = []
            self.model = model()

    given, most = worst_case_tokens(Call(), 512)
    assert most == 512
    assert given == 108  # ceil(len('[{"role":"user","content":"xxx..."}]') / 4)


def test_budgets_are_validated_with_what_to_do() -> None:
    with pytest.raises(ConfigError, match="on_exhausted is raise or approval"):
        BudgetConfig(on_exhausted="pause")  # type: ignore[arg-type]


async def test_sqlite_store_keeps_posts_idempotent_across_processes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    await store.open()
    try:
        from tether.store import LedgerEntry

        assert await store.ledger_post("a", [LedgerEntry("s", 1, cap=1)], now_ms=0)
        assert not await store.ledger_post("a", [LedgerEntry("s", 1, cap=1)], now_ms=0)
    finally:
        await store.aclose()
