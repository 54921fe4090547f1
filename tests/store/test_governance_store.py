"""The store's audit chain and approvals (``Store.append_audit`` ... ``list_approvals``),
on every engine."""

from __future__ import annotations

import pytest

from tether.errors import ApprovalExpired, ApprovalNotFound, UsageError
from tether.store import AUDIT_GENESIS, Approval, Commit, Store, approval_signal, chain_hash
from tether.types import RunStatus

from .helpers import T0, create_claimed

pytestmark = pytest.mark.anyio


def pending(run_id: str, seq: int, *, requested_at_ms: int = T0) -> Approval:
    return Approval(approval_id=f"{run_id}:{seq}", run_id=run_id, seq=seq, tenant="acme",
                    principal="alice", agent="greeter", tool="refund",
                    args='{"amount":900}', message='{"text":"refund it"}',
                    policies='["big-refunds"]', status="pending",
                    requested_at_ms=requested_at_ms, expires_at_ms=requested_at_ms + 60_000)


async def append(store: Store, tenant: str, bodies: list[str]) -> None:
    pending_write = store.append_audit(tenant, bodies, Commit.WAIT)
    if pending_write is not None:
        await pending_write


async def test_audit_records_chain_per_tenant(store: Store) -> None:
    await append(store, "acme", ['{"n":1}', '{"n":2}'])
    await append(store, "globex", ['{"n":1}'])
    await append(store, "acme", ['{"n":3}'])
    rows = await store.load_audit("acme")
    assert [row.idx for row in rows] == [1, 2, 3]
    previous = AUDIT_GENESIS
    for row in rows:
        assert row.hash == chain_hash(previous, row.body)
        previous = row.hash
    assert (await store.audit_head("acme")) == rows[-1]
    assert [row.idx for row in await store.load_audit("acme", after_idx=1, limit=1)] == [2]
    assert await store.audit_tenants() == ["acme", "globex"]
    assert (await store.load_audit("globex"))[0].hash == chain_hash(AUDIT_GENESIS, '{"n":1}')
    assert await store.audit_head("nobody") is None


async def test_a_lazy_audit_record_commits_with_a_later_durable_one(store: Store) -> None:
    assert store.append_audit("acme", ['{"lazy":1}'], Commit.LAZY) is None
    await append(store, "acme", ['{"durable":2}'])
    assert [row.body for row in await store.load_audit("acme")] == ['{"lazy":1}',
                                                                     '{"durable":2}']


async def test_asking_twice_for_an_approval_keeps_the_first(store: Store) -> None:
    first = await store.request_approval(pending("r1", 3))
    again = await store.request_approval(pending("r1", 3, requested_at_ms=T0 + 5))
    assert again == first == await store.get_approval("r1:3")
    assert first.to_json()["args"] == {"amount": 900}


async def test_deciding_an_approval_wakes_the_run_waiting_for_it(store: Store) -> None:
    claim = await create_claimed(store, "r1")
    await store.request_approval(pending("r1", 3))
    assert await store.suspend_run("r1", claim.fence, wake_at_ms=None,
                                   waiting_for=approval_signal(3), now_ms=T0)
    decided = await store.decide_approval("r1:3", status="approved", by="bob", reason="ok",
                                          now_ms=T0 + 10)
    assert (decided.status, decided.decided_by, decided.reason, decided.decided_at_ms) == (
        "approved", "bob", "ok", T0 + 10)
    run = await store.get_run("r1")
    assert run is not None
    assert run.status is RunStatus.PENDING
    with pytest.raises(UsageError, match="approved by bob already"):
        await store.decide_approval("r1:3", status="denied", by="carol", reason="no",
                                    now_ms=T0 + 20)
    with pytest.raises(ApprovalNotFound):
        await store.decide_approval("r1:4", status="denied", by="bob", reason="no", now_ms=T0)
    with pytest.raises(UsageError, match="one of"):
        await store.decide_approval("r1:3", status="maybe", by="bob", reason="?", now_ms=T0)


async def test_approvals_are_listed_oldest_first_by_status(store: Store) -> None:
    await store.request_approval(pending("r2", 1, requested_at_ms=T0 + 2))
    await store.request_approval(pending("r1", 1, requested_at_ms=T0 + 1))
    await store.request_approval(pending("r3", 1, requested_at_ms=T0 + 3))
    await store.decide_approval("r3:1", status="denied", by="bob", reason="no", now_ms=T0)
    assert [a.approval_id for a in await store.list_approvals()] == ["r1:1", "r2:1", "r3:1"]
    assert [a.approval_id for a in await store.list_approvals(status="pending")] == [
        "r1:1", "r2:1"]
    assert [a.approval_id for a in await store.list_approvals(limit=1)] == ["r1:1"]


async def test_an_expired_approval_cannot_be_approved_or_denied_only_expired(
        store: Store) -> None:
    """A late yes must not reach a call whose time ran out, whichever engine decides."""
    await store.request_approval(pending("r1", 3))  # expires at T0 + 60_000
    for status in ("approved", "denied"):
        with pytest.raises(ApprovalExpired, match="expired"):
            await store.decide_approval("r1:3", status=status, by="bob", reason="late",
                                        now_ms=T0 + 60_000)
    still = await store.get_approval("r1:3")
    assert still is not None
    assert still.status == "pending"
    decided = await store.decide_approval("r1:3", status="approved", by="bob", reason="ok",
                                          now_ms=T0 + 59_999)  # a moment before: in time
    assert decided.status == "approved"
    await store.request_approval(pending("r1", 4))
    expired = await store.decide_approval("r1:4", status="expired", by="tether",
                                          reason="not decided in time", now_ms=T0 + 60_000)
    assert expired.status == "expired"
