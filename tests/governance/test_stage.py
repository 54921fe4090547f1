"""The governance stage in a real runtime: refusals journaled and replayed, the tools a
model sees, runs refused at the start, and approvals that park a run and resume it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from gov_support import REFUNDS, calls, delete_account, governance, support_agent

import tether
from conftest import fast_settings
from tether.errors import PolicyDenied
from tether.governance import Governance
from tether.models import ModelRequest
from tether.types import Reply, RunStatus

pytestmark = pytest.mark.anyio


def runtime(gov: Governance, db_url: str) -> tether.Runtime:
    return tether.Runtime(settings=fast_settings(db_url, principal="alice", tenant="acme"),
                          stages=gov.stages())


async def journal_by_seq(rt: tether.Runtime, run_id: str) -> dict[int, Any]:
    return {record.seq: record.to_json() for record in await rt.journal(run_id)}


async def test_a_refused_call_is_journaled_and_the_model_never_saw_the_tool(
        tmp_path: Path, db_url: str) -> None:
    seen: list[list[str]] = []
    script = [calls(("delete_account", {"user": "x"})), Reply(text="I may not do that.")]

    class Watching:
        name = "scripted"

        async def complete(self, request: ModelRequest) -> Reply:
            seen.append([spec.name for spec in request.tools])
            return script[request.call_index]

    agent, _ = support_agent([])
    loop_agent = tether.agent(tools=list(agent.tools.values()), name="support", version="2")(
        _loop_fn(Watching()))
    gov = governance(tmp_path)
    async with runtime(gov, db_url) as rt:
        handle = await rt.start(loop_agent, {"question": "delete x"})
        assert await handle.result() == "I may not do that."
        records = await journal_by_seq(rt, handle.run_id)
    assert seen == [["lookup_order", "refund"]] * 2
    llm = next(r for r in records.values() if r["kind"] == "llm")
    assert llm["detail"]["policy"]["hidden_tools"] == ["delete_account"]
    tool = next(r for r in records.values() if r["kind"] == "tool")
    assert tool["state"] == "error"
    assert tool["value"]["code"] == "policy.denied"
    assert tool["detail"]["policy"]["effect"] == "deny"


def _loop_fn(model: Any) -> Any:
    from gov_support import TOOLS

    from tether.agents import ToolLoop
    loop = ToolLoop(model, tools=TOOLS)

    async def support(ctx: tether.Context, question: str) -> str:
        return await loop.run(ctx, question)
    return support


@tether.agent(name="support", version="wait", tools=[delete_account])
async def deny_then_wait(ctx: tether.Context) -> str:
    try:
        await ctx.tool("delete_account", {"user": "x"})
        outcome = "deleted"
    except PolicyDenied as exc:
        outcome = f"refused by {exc.code}"
    await ctx.wait("go")
    return outcome


async def test_replay_gives_the_recorded_refusal_even_after_policies_change(
        tmp_path: Path, sqlite_url: str) -> None:
    agent = deny_then_wait
    gov = governance(tmp_path)
    async with runtime(gov, sqlite_url) as rt:
        handle = await rt.start(agent, {})
        assert (await handle.settled()).status is RunStatus.WAITING
    (tmp_path / "policies" / "open.cedar").write_text(
        '@id("open")\npermit (principal, action, resource);\n')
    async with runtime(governance(tmp_path), sqlite_url) as rt:
        await rt.signal(handle.run_id, "go")
        assert await rt.handle(handle.run_id).result() == "refused by policy.denied"


async def test_a_run_for_an_unknown_principal_is_refused_and_not_created(
        tmp_path: Path, db_url: str) -> None:
    agent, _ = support_agent([Reply(text="hi")])
    async with runtime(governance(tmp_path), db_url) as rt:
        with pytest.raises(PolicyDenied, match="unknown principal 'mallory'"):
            await rt.start(agent, {"question": "?"}, principal="mallory")
        with pytest.raises(PolicyDenied, match="default deny"):
            await rt.start(agent, {"question": "?"}, principal="carol")
        assert await rt.store.list_runs() == []
        assert await rt.run(agent, {"question": "?"}) == "hi"


async def test_a_held_call_parks_the_run_until_a_supervisor_approves(
        tmp_path: Path, db_url: str) -> None:
    REFUNDS.clear()
    agent, _ = support_agent([calls(("refund", {"order_id": "A-9", "amount": 900}),
                                    text="Refunding the full 900."),
                              Reply(text="Done.")])
    gov = governance(tmp_path)
    async with runtime(gov, db_url) as rt:
        handle = await rt.start(agent, {"question": "refund A-9"})
        run = await handle.settled()
        assert run.status is RunStatus.WAITING
        assert run.waiting_for == "tether.approval:3"
        (pending,) = await rt.store.list_approvals(status="pending")
        shown = pending.to_json()
        assert shown["tool"] == "refund"
        assert shown["args"] == {"order_id": "A-9", "amount": 900}
        assert shown["message"]["text"] == "Refunding the full 900."
        assert shown["policies"] == ["refunds-over-500-need-approval"]
        with pytest.raises(PolicyDenied, match="approve"):
            await gov.decide_approval(rt.store, pending.approval_id, approve=True, by="alice",
                                      reason="I want it")
        await gov.decide_approval(rt.store, pending.approval_id, approve=True, by="bob",
                                  reason="customer is right")
        await rt.resume(handle.run_id)
        assert await rt.handle(handle.run_id).result() == "Done."
        records = await journal_by_seq(rt, handle.run_id)
    assert REFUNDS == [{"order_id": "A-9", "amount": 900}]
    approval = records[3]["detail"]["policy"]["approval"]
    assert approval["by"] == "bob"
    assert approval["reason"] == "customer is right"
    assert records[3]["detail"]["policy"]["approved_by"] == "bob"


async def test_a_denied_approval_is_a_refusal_the_model_sees(tmp_path: Path, db_url: str) -> None:
    REFUNDS.clear()
    script = [calls(("refund", {"order_id": "A-9", "amount": 900})), Reply(text="Sorry.")]
    agent, _ = support_agent(script)
    gov = governance(tmp_path)
    async with runtime(gov, db_url) as rt:
        handle = await rt.start(agent, {"question": "refund A-9"})
        await handle.settled()
        (pending,) = await rt.store.list_approvals()
        await gov.decide_approval(rt.store, pending.approval_id, approve=False, by="bob",
                                  reason="over the limit")
        await rt.resume(handle.run_id)
        assert await rt.handle(handle.run_id).result() == "Sorry."
        records = await journal_by_seq(rt, handle.run_id)
    assert REFUNDS == []
    assert "denied by bob: over the limit" in records[3]["value"]["message"]


async def test_an_approval_nobody_decides_expires_and_denies(tmp_path: Path, db_url: str) -> None:
    agent, _ = support_agent([calls(("refund", {"order_id": "A-9", "amount": 900})),
                              Reply(text="It expired.")])
    gov = governance(tmp_path, approval_timeout_seconds=0.3)
    async with runtime(gov, db_url) as rt:
        handle = await rt.start(agent, {"question": "refund A-9"})
        with anyio.fail_after(10):
            assert await handle.result() == "It expired."
        (expired,) = await rt.store.list_approvals()
    assert expired.status == "expired"
    assert expired.decided_by == "tether"


async def test_approving_one_of_parallel_calls_does_not_repeat_the_others(
        tmp_path: Path, db_url: str) -> None:
    REFUNDS.clear()
    agent, _ = support_agent([calls(("refund", {"order_id": "A-1", "amount": 10}),
                                    ("refund", {"order_id": "A-2", "amount": 20}),
                                    ("refund", {"order_id": "A-3", "amount": 900})),
                              Reply(text="All three.")])
    gov = governance(tmp_path)
    async with runtime(gov, db_url) as rt:
        handle = await rt.start(agent, {"question": "refund three"})
        assert (await handle.settled()).status is RunStatus.WAITING
        # The two calls ran in parallel (threads): in either order, each once.
        assert sorted(str(r["order_id"]) for r in REFUNDS) == ["A-1", "A-2"]
        (pending,) = await rt.store.list_approvals()
        assert pending.seq == 5
        await gov.decide_approval(rt.store, pending.approval_id, approve=True, by="bob",
                                  reason="fine")
        await rt.resume(handle.run_id)
        assert await rt.handle(handle.run_id).result() == "All three."
    assert sorted(str(r["order_id"]) for r in REFUNDS) == ["A-1", "A-2", "A-3"]
    assert REFUNDS[-1]["order_id"] == "A-3"  # the approved one, after the approval


async def test_every_decision_and_effect_is_audited(tmp_path: Path, db_url: str) -> None:
    agent, _ = support_agent([calls(("lookup_order", {"order_id": "SECRET-1"})),
                              Reply(text="ok")])
    gov = governance(tmp_path)
    async with runtime(gov, db_url) as rt:
        await rt.run(agent, {"question": "?"})
        rows = await rt.store.load_audit("acme")
    bodies = [json.loads(row.body) for row in rows]
    kinds = [(b["type"], b.get("kind"), b.get("decision", {}).get("effect")) for b in bodies]
    assert kinds == [("decision", None, "allow"), ("decision", "llm", "allow"),
                     ("effect", "llm", None), ("decision", "tool", "allow"),
                     ("effect", "tool", None), ("decision", "llm", "allow"),
                     ("effect", "llm", None)]
    tool_decision = bodies[3]
    assert tool_decision["decision"]["policies"] == ["support-staff-use-support-tools",
                                                     "support-agent-grant"]
    assert tool_decision["args_digest"] == gov.audit.digest("acme", {"order_id": "SECRET-1"})
    assert all("SECRET-1" not in row.body for row in rows)
    assert bodies[2]["usage"]["input_tokens"] == 0
