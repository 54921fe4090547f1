"""An approval covers only the call it was asked for, only until it expires, and only when
someone other than the run's own principal gives it (unless the config allows that)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from gov_support import REFUNDS, calls, governance, support_agent

import tether
from conftest import fast_settings
from tether.errors import ApprovalExpired, PolicyDenied
from tether.governance import Governance
from tether.store import Approval, Store
from tether.testing import FakeClock
from tether.types import Reply

pytestmark = pytest.mark.anyio

RUN_ID = "held"
SEQ = 3  # the first tool call of a support run (after the start and the first model reply)
APPROVAL_ID = f"{RUN_ID}:{SEQ}"
A9_900 = '{"amount":900,"order_id":"A-9"}'


def runtime(gov: Governance, db_url: str, principal: str = "alice") -> tether.Runtime:
    return tether.Runtime(settings=fast_settings(db_url, principal=principal, tenant="acme"),
                          stages=gov.stages())


async def held(store: Store, tool: str = "refund", args: str = A9_900, *,
               principal: str = "alice", approved: bool = False, clock: FakeClock | None = None,
               ) -> None:
    """A request at the run's first tool call, approved by bob if ``approved``: with other
    calls at that step, what an earlier execution of the run left before its journal writes
    were lost."""
    now = (clock or FakeClock()).now_ms()
    await store.request_approval(Approval(
        approval_id=APPROVAL_ID, run_id=RUN_ID, seq=SEQ, tenant="acme", principal=principal,
        agent="support", tool=tool, args=args, message=None,
        policies='["refunds-over-500-need-approval"]', status="pending", requested_at_ms=now,
        expires_at_ms=now + 60_000))
    if approved:
        await store.decide_approval(APPROVAL_ID, status="approved", by="bob",
                                    reason="checked it", now_ms=now)


async def run_held(rt: tether.Runtime, call: tuple[str, dict[str, object]], text: str,
                   ) -> dict[int, Any]:
    """Run a support agent whose first tool call is ``call``; its journal by seq."""
    agent, _ = support_agent([calls(call), Reply(text=text)])
    handle = await rt.start(agent, {"question": "go"}, run_id=RUN_ID)
    assert await handle.result() == text  # never parked on another call's request
    return {r.seq: r.to_json() for r in await rt.journal(RUN_ID)}


async def test_an_approval_does_not_cover_other_arguments_at_its_seq(
        tmp_path: Path, db_url: str) -> None:
    REFUNDS.clear()
    gov = governance(tmp_path)
    async with runtime(gov, db_url) as rt:
        await held(rt.store, approved=True)
        records = await run_held(rt, ("refund", {"order_id": "A-9", "amount": 9000}),
                                 "Refused.")
        audit = [json.loads(row.body) for row in await rt.store.load_audit("acme")]
    assert REFUNDS == []
    tool = records[SEQ]
    assert tool["state"] == "error"
    assert tool["value"]["code"] == "policy.denied"
    assert "was asked for 'refund' with other arguments" in tool["value"]["message"]
    assert tool["detail"]["policy"]["effect"] == "deny"
    assert tool["detail"]["policy"]["approval"]["unbound"] == (
        "was asked for 'refund' with other arguments")
    (decision,) = [b for b in audit if b["type"] == "decision" and b.get("seq") == SEQ]
    assert decision["decision"]["effect"] == "deny"


async def test_an_approval_does_not_cover_another_tool_at_its_seq(
        tmp_path: Path, sqlite_url: str) -> None:
    gov = governance(tmp_path)
    (tmp_path / "policies" / "deletions.cedar").write_text(
        '@id("support-agent-deletes")\npermit (principal == Agent::"support", '
        'action == Action::"call_tool", resource == Tool::"delete_account");\n'
        '@id("deletions-need-approval")\n@approval("a person approves each deletion")\n'
        'forbid (principal, action == Action::"call_tool", resource == Tool::"delete_account");\n')
    async with runtime(gov, sqlite_url, principal="root") as rt:
        await held(rt.store, principal="root", approved=True)
        records = await run_held(rt, ("delete_account", {"user": "x"}), "Refused.")
    assert records[SEQ]["value"]["code"] == "policy.denied"
    assert "was asked for tool 'refund', not 'delete_account'" in records[SEQ]["value"]["message"]


async def test_a_pending_approval_for_another_call_is_settled_not_waited_on(
        tmp_path: Path, sqlite_url: str) -> None:
    gov = governance(tmp_path)
    async with runtime(gov, sqlite_url) as rt:
        await held(rt.store)
        await run_held(rt, ("refund", {"order_id": "A-9", "amount": 9000}), "Refused.")
        stale = await rt.store.get_approval(APPROVAL_ID)
    assert stale is not None
    assert (stale.status, stale.decided_by) == ("denied", "tether")
    assert "superseded" in (stale.reason or "")


async def test_the_same_arguments_in_another_key_order_are_the_same_call(
        tmp_path: Path, db_url: str) -> None:
    REFUNDS.clear()
    gov = governance(tmp_path)
    async with runtime(gov, db_url) as rt:
        await held(rt.store, args='{"order_id": "A-9", "amount": 900.0}', approved=True)
        await run_held(rt, ("refund", {"order_id": "A-9", "amount": 900}), "Done.")
    assert REFUNDS == [{"order_id": "A-9", "amount": 900}]


async def test_a_principal_may_not_approve_its_own_run_by_default(
        tmp_path: Path, sqlite_url: str) -> None:
    clock = FakeClock()
    gov = governance(tmp_path, clock=clock)
    async with runtime(gov, sqlite_url) as rt:
        await held(rt.store, principal="bob", clock=clock)  # bob, a supervisor, started it
        with pytest.raises(PolicyDenied, match="may not approve its own calls"):
            await gov.decide_approval(rt.store, APPROVAL_ID, approve=True, by="bob", reason="mine")
        approval = await rt.store.get_approval(APPROVAL_ID)
        assert approval is not None
        assert approval.status == "pending"
        denied = await gov.decide_approval(rt.store, APPROVAL_ID, approve=False, by="bob",
                                           reason="changed my mind")  # refusing is fine
        audit = [json.loads(row.body) for row in await rt.store.load_audit("acme")]
    assert denied.status == "denied"
    refused = [b for b in audit if b.get("refused") == "self_approval"]
    assert [(b["principal"], b["status"]) for b in refused] == [("bob", "refused")]


async def test_self_approval_is_allowed_when_the_config_says_so(
        tmp_path: Path, sqlite_url: str) -> None:
    clock = FakeClock()
    gov = governance(tmp_path, clock=clock, allow_self_approval=True)
    async with runtime(gov, sqlite_url) as rt:
        await held(rt.store, principal="bob", clock=clock)
        approved = await gov.decide_approval(rt.store, APPROVAL_ID, approve=True, by="bob",
                                             reason="mine, allowed here")
    assert (approved.status, approved.decided_by) == ("approved", "bob")


async def test_an_approval_given_after_it_expired_is_refused_and_audited(
        tmp_path: Path, db_url: str) -> None:
    clock = FakeClock()
    gov = governance(tmp_path, clock=clock)
    async with runtime(gov, db_url) as rt:
        await held(rt.store, clock=clock)
        clock.advance(60)
        with pytest.raises(ApprovalExpired):
            await gov.decide_approval(rt.store, APPROVAL_ID, approve=True, by="bob", reason="late")
        approval = await rt.store.get_approval(APPROVAL_ID)
        audit = [json.loads(row.body) for row in await rt.store.load_audit("acme")]
    assert approval is not None
    assert approval.status == "pending"  # the run expires it when it next runs
    assert [(b["principal"], b["refused"]) for b in audit if "refused" in b] == [
        ("bob", "expired")]
