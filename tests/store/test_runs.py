"""Runs in the store: creating, claiming, leases, cancelling and the read queries."""

from __future__ import annotations

import dataclasses

import pytest

from tether.errors import RunNotFound
from tether.store import Store
from tether.types import Run, RunStatus

from .helpers import (
    LEASE_MS,
    OWNER_A,
    OWNER_B,
    OWNER_C,
    T0,
    claim_one,
    create_claimed,
    new_run,
    nobody_is_dead,
    take_over,
)

pytestmark = pytest.mark.anyio


async def claimable(store: Store, *, now_ms: int, owner: str = OWNER_C, limit: int = 100,
                    run_ids: list[str] | None = None) -> list[str]:
    """Ids a third worker claims now (claiming them)."""
    claims = await store.claim_runs(owner=owner, now_ms=now_ms, lease_ms=LEASE_MS, limit=limit,
                                    owner_is_dead=nobody_is_dead, run_ids=run_ids)
    return sorted(c.run.run_id for c in claims)


# -- create_run ----------------------------------------------------------------------------


async def test_create_run_without_owner_makes_an_unclaimed_pending_run(store: Store) -> None:
    created = await store.create_run(new_run("r1", thread_id="th", parent_run_id="p"),
                                     now_ms=T0, owner=None, lease_ms=LEASE_MS)
    assert created.claim is None
    run = created.run
    assert (run.status, run.owner) == (RunStatus.PENDING, None)
    assert (run.agent, run.agent_version, run.agent_ref) == ("greeter", "1", "app:greeter")
    assert run.input == {"name": "Ada"}
    assert (run.tenant, run.principal, run.thread_id, run.parent_run_id) == (
        "acme", "alice", "th", "p")
    assert (run.created_at_ms, run.updated_at_ms) == (T0, T0)
    assert await store.get_run("r1") == run


async def test_create_run_with_owner_claims_it_running_with_fence_one(store: Store) -> None:
    created = await store.create_run(new_run("r1"), now_ms=T0, owner=OWNER_A, lease_ms=LEASE_MS)
    assert created.claim is not None
    assert created.claim.fence == 1
    assert (created.run.status, created.run.owner) == (RunStatus.RUNNING, OWNER_A)
    assert created.claim.run == created.run
    stored = await store.get_run("r1")
    assert stored is not None
    assert (stored.status, stored.owner) == (RunStatus.RUNNING, OWNER_A)
    # The creator's lease is live: nobody else may claim the run.
    assert await claimable(store, now_ms=T0 + 1) == []


async def test_creating_an_existing_run_id_returns_the_existing_run_and_no_claim(
        store: Store) -> None:
    first = await store.create_run(new_run("r1"), now_ms=T0, owner=OWNER_A, lease_ms=LEASE_MS)
    again = await store.create_run(new_run("r1", agent="other", input_json='{"name": "Bob"}'),
                                   now_ms=T0 + 5, owner=OWNER_B, lease_ms=LEASE_MS)
    assert again.claim is None
    assert again.run == first.run
    assert await store.get_run("r1") == first.run


# -- claim_runs ----------------------------------------------------------------------------


async def test_claim_takes_pending_runs_and_increments_their_fence(store: Store) -> None:
    await store.create_run(new_run("r1"), now_ms=T0, owner=None, lease_ms=LEASE_MS)
    claims = await store.claim_runs(owner=OWNER_B, now_ms=T0 + 1, lease_ms=LEASE_MS, limit=10,
                                    owner_is_dead=nobody_is_dead)
    assert len(claims) == 1
    claim = claims[0]
    assert claim.fence == 1
    assert (claim.run.run_id, claim.run.status, claim.run.owner) == (
        "r1", RunStatus.RUNNING, OWNER_B)
    assert await store.get_run("r1") == claim.run
    assert await claimable(store, now_ms=T0 + 2) == []


async def test_claim_takes_waiting_runs_whose_timer_is_due_but_not_future_ones(
        store: Store) -> None:
    for run_id, wake in (("due", T0 + 100), ("exact", T0 + 200), ("later", T0 + 10_000)):
        claim = await create_claimed(store, run_id)
        assert await store.suspend_run(run_id, claim.fence, wake_at_ms=wake, waiting_for=None,
                                       now_ms=T0)
    assert await claimable(store, now_ms=T0 + 50) == []
    assert await claimable(store, now_ms=T0 + 200) == ["due", "exact"]
    later = await store.get_run("later")
    assert later is not None
    assert (later.status, later.wake_at_ms) == (RunStatus.WAITING, T0 + 10_000)
    woken = await store.get_run("due")
    assert woken is not None
    assert (woken.status, woken.wake_at_ms) == (RunStatus.RUNNING, None)


async def test_claim_never_takes_a_run_waiting_only_for_a_signal(store: Store) -> None:
    claim = await create_claimed(store, "r1")
    assert await store.suspend_run("r1", claim.fence, wake_at_ms=None, waiting_for="approval",
                                   now_ms=T0)
    assert await claimable(store, now_ms=T0 + 100 * LEASE_MS) == []


async def test_claim_takes_over_a_running_run_only_after_its_lease_expires(
        store: Store) -> None:
    await create_claimed(store, "r1", owner=OWNER_A, now_ms=T0, lease_ms=1_000)
    assert await claimable(store, now_ms=T0 + 999) == []
    claims = await store.claim_runs(owner=OWNER_B, now_ms=T0 + 1_001, lease_ms=LEASE_MS,
                                    limit=10, owner_is_dead=nobody_is_dead)
    assert [(c.run.run_id, c.fence, c.run.owner) for c in claims] == [("r1", 2, OWNER_B)]


async def test_claim_takes_at_once_the_runs_of_an_owner_known_to_be_dead(store: Store) -> None:
    await create_claimed(store, "r1", owner=OWNER_A)
    await create_claimed(store, "r2", owner=OWNER_C)
    asked: list[str] = []

    def a_is_dead(owner: str) -> bool:
        asked.append(owner)
        return owner == OWNER_A

    claims = await store.claim_runs(owner=OWNER_B, now_ms=T0 + 1, lease_ms=LEASE_MS, limit=10,
                                    owner_is_dead=a_is_dead)
    assert [(c.run.run_id, c.fence, c.run.owner) for c in claims] == [("r1", 2, OWNER_B)]
    assert OWNER_A in asked
    still = await store.get_run("r2")
    assert still is not None
    assert still.owner == OWNER_C


async def test_claim_respects_the_limit(store: Store) -> None:
    for i in range(5):
        await store.create_run(new_run(f"r{i}"), now_ms=T0 + i, owner=None, lease_ms=LEASE_MS)
    first = await claimable(store, now_ms=T0 + 10, limit=2)
    second = await claimable(store, now_ms=T0 + 10, limit=2)
    third = await claimable(store, now_ms=T0 + 10, limit=2)
    assert (len(first), len(second), len(third)) == (2, 2, 1)
    assert sorted(first + second + third) == [f"r{i}" for i in range(5)]
    assert await claimable(store, now_ms=T0 + 10, limit=2) == []


async def test_claim_with_run_ids_takes_only_those_runs(store: Store) -> None:
    for run_id in ("a", "b", "c"):
        await store.create_run(new_run(run_id), now_ms=T0, owner=None, lease_ms=LEASE_MS)
    assert await claimable(store, now_ms=T0 + 1, run_ids=["b", "missing"]) == ["b"]
    assert await claimable(store, now_ms=T0 + 1, run_ids=[]) == []
    assert await claimable(store, now_ms=T0 + 1) == ["a", "c"]


async def test_claim_with_run_ids_takes_the_named_run_of_a_dead_owner(store: Store) -> None:
    """The named run is claimed even when the dead owner holds other runs first in line."""
    for run_id in ("a1", "a2", "a3"):
        await create_claimed(store, run_id, owner=OWNER_A)
    claims = await store.claim_runs(owner=OWNER_B, now_ms=T0 + 1, lease_ms=LEASE_MS, limit=1,
                                    owner_is_dead=lambda owner: owner == OWNER_A,
                                    run_ids=["a3"])
    assert [c.run.run_id for c in claims] == ["a3"]


async def test_claim_fills_its_limit_with_distinct_runs_of_a_dead_owner(store: Store) -> None:
    """A dead owner's run whose lease also expired counts once toward the limit."""
    await create_claimed(store, "expired", owner=OWNER_A, lease_ms=1_000)
    await create_claimed(store, "live", owner=OWNER_A, lease_ms=LEASE_MS)
    claims = await store.claim_runs(owner=OWNER_B, now_ms=T0 + 2_000, lease_ms=LEASE_MS,
                                    limit=2, owner_is_dead=lambda owner: owner == OWNER_A)
    assert sorted(c.run.run_id for c in claims) == ["expired", "live"]


async def test_each_claim_of_a_run_increments_its_fence(store: Store) -> None:
    claim = await create_claimed(store, "r1", owner=OWNER_A, now_ms=T0, lease_ms=1_000)
    fences = [claim.fence]
    for step, owner in enumerate((OWNER_B, OWNER_C, OWNER_A), start=1):
        claim = await claim_one(store, "r1", owner=owner, now_ms=T0 + step * 2_000,
                                lease_ms=1_000)
        fences.append(claim.fence)
    assert fences == [1, 2, 3, 4]


async def test_claim_never_takes_ended_or_attention_needing_runs(store: Store) -> None:
    for run_id, status in (("done", RunStatus.COMPLETED), ("bad", RunStatus.FAILED),
                           ("stuck", RunStatus.NEEDS_ATTENTION)):
        claim = await create_claimed(store, run_id)
        await store.finish_run(run_id, claim.fence, status=status, result=None, error=None,
                               now_ms=T0)
    await store.create_run(new_run("gone"), now_ms=T0, owner=None, lease_ms=LEASE_MS)
    await store.cancel_run("gone", reason={"message": "stop"}, now_ms=T0)
    assert await claimable(store, now_ms=T0 + 100 * LEASE_MS) == []


# -- heartbeat and release -----------------------------------------------------------------


async def test_heartbeat_extends_the_lease(store: Store) -> None:
    await create_claimed(store, "r1", owner=OWNER_A, now_ms=T0, lease_ms=1_000)
    lost = await store.heartbeat(owner=OWNER_A, run_ids=["r1"], now_ms=T0 + 900,
                                 lease_ms=1_000)
    assert lost == []
    # Without the heartbeat the lease would have ended at T0 + 1000.
    assert await claimable(store, now_ms=T0 + 1_500) == []
    assert await claimable(store, now_ms=T0 + 1_901) == ["r1"]


async def test_heartbeat_returns_the_runs_the_owner_no_longer_holds(store: Store) -> None:
    await create_claimed(store, "kept", owner=OWNER_A, lease_ms=LEASE_MS)
    await create_claimed(store, "cancelled", owner=OWNER_A, lease_ms=LEASE_MS)
    await create_claimed(store, "taken", owner=OWNER_A, lease_ms=1_000)
    await store.cancel_run("cancelled", reason={"message": "stop"}, now_ms=T0 + 1)
    await claim_one(store, "taken", owner=OWNER_B, now_ms=T0 + 2_000)
    lost = await store.heartbeat(owner=OWNER_A, run_ids=["kept", "cancelled", "taken"],
                                 now_ms=T0 + 2_001, lease_ms=LEASE_MS)
    assert sorted(lost) == ["cancelled", "taken"]
    # The run taken over keeps its new owner: the old owner's heartbeat did not steal it back.
    taken = await store.get_run("taken")
    assert taken is not None
    assert taken.owner == OWNER_B


async def test_release_makes_the_owners_runs_claimable_at_once(store: Store) -> None:
    await create_claimed(store, "mine1", owner=OWNER_A)
    await create_claimed(store, "mine2", owner=OWNER_A)
    await create_claimed(store, "theirs", owner=OWNER_B)
    assert await claimable(store, now_ms=T0 + 1) == []
    await store.release(owner=OWNER_A)
    lost = await store.heartbeat(owner=OWNER_A, run_ids=["mine1", "mine2"], now_ms=T0 + 1,
                                 lease_ms=LEASE_MS)
    assert sorted(lost) == ["mine1", "mine2"]
    assert await claimable(store, now_ms=T0 + 1) == ["mine1", "mine2"]


# -- cancel_run ----------------------------------------------------------------------------


async def test_cancel_settles_a_run_that_has_not_ended(store: Store) -> None:
    await store.create_run(new_run("pending"), now_ms=T0, owner=None, lease_ms=LEASE_MS)
    await create_claimed(store, "running")
    waiting = await create_claimed(store, "waiting")
    await store.suspend_run("waiting", waiting.fence, wake_at_ms=T0 + 5_000,
                            waiting_for="approval", now_ms=T0)
    for run_id in ("pending", "running", "waiting"):
        run = await store.cancel_run(run_id, reason={"message": "no longer needed"},
                                     now_ms=T0 + 10)
        assert (run.status, run.owner, run.error) == (
            RunStatus.CANCELLED, None, {"message": "no longer needed"})
        assert (run.wake_at_ms, run.waiting_for) == (None, None)
        assert await store.get_run(run_id) == run
    assert await store.next_wake_ms() is None


async def test_cancel_leaves_an_ended_run_as_it_was(store: Store) -> None:
    claim = await create_claimed(store, "r1")
    await store.finish_run("r1", claim.fence, status=RunStatus.COMPLETED, result='"done"',
                           error=None, now_ms=T0 + 1)
    before = await store.get_run("r1")
    after = await store.cancel_run("r1", reason={"message": "late"}, now_ms=T0 + 2)
    assert after == before
    assert after.status is RunStatus.COMPLETED
    assert after.result == "done"


async def test_cancel_of_an_unknown_run_raises_run_not_found(store: Store) -> None:
    with pytest.raises(RunNotFound):
        await store.cancel_run("nope", reason={}, now_ms=T0)


# -- reads ---------------------------------------------------------------------------------


async def test_get_run_of_an_unknown_id_returns_none(store: Store) -> None:
    assert await store.get_run("nope") is None


async def test_list_runs_is_newest_first_and_filters_by_status_and_agent(store: Store) -> None:
    await store.create_run(new_run("old", agent="greeter"), now_ms=T0, owner=None,
                           lease_ms=LEASE_MS)
    await store.create_run(new_run("mid", agent="counter"), now_ms=T0 + 1, owner=OWNER_A,
                           lease_ms=LEASE_MS)
    await store.create_run(new_run("new", agent="greeter"), now_ms=T0 + 2, owner=None,
                           lease_ms=LEASE_MS)

    def ids(runs: list[Run]) -> list[str]:
        return [run.run_id for run in runs]

    assert ids(await store.list_runs()) == ["new", "mid", "old"]
    assert ids(await store.list_runs(limit=2)) == ["new", "mid"]
    assert ids(await store.list_runs(status=RunStatus.PENDING)) == ["new", "old"]
    assert ids(await store.list_runs(status=RunStatus.RUNNING)) == ["mid"]
    assert ids(await store.list_runs(agent="greeter")) == ["new", "old"]
    assert ids(await store.list_runs(agent="greeter", status=RunStatus.RUNNING)) == []
    assert ids(await store.list_runs(status=RunStatus.COMPLETED)) == []


async def test_list_runs_pages_by_cursor_and_filters_by_tenant(store: Store) -> None:
    """Runs created in the same millisecond still page in a fixed order, none twice or lost."""
    for i, run_id in enumerate(("a", "b", "c", "d", "e")):
        await store.create_run(new_run(run_id), now_ms=T0 + (i // 2), owner=None,
                               lease_ms=LEASE_MS)
    other = dataclasses.replace(new_run("x"), tenant="globex")
    await store.create_run(other, now_ms=T0 + 9, owner=None, lease_ms=LEASE_MS)
    seen: list[str] = []
    before: tuple[int, str] | None = None
    while page := await store.list_runs(limit=2, tenant="acme", before=before):
        seen.extend(run.run_id for run in page)
        before = (page[-1].created_at_ms, page[-1].run_id)
    assert seen == ["e", "d", "c", "b", "a"]
    assert [run.run_id for run in await store.list_runs(tenant="globex")] == ["x"]
    assert await store.list_runs(tenant="initech") == []


async def test_next_wake_is_the_earliest_timer_among_waiting_runs(store: Store) -> None:
    assert await store.next_wake_ms() is None
    for run_id, wake in (("late", T0 + 9_000), ("soon", T0 + 3_000), ("signal", None)):
        claim = await create_claimed(store, run_id)
        await store.suspend_run(run_id, claim.fence, wake_at_ms=wake,
                                waiting_for="go" if wake is None else None, now_ms=T0)
    assert await store.next_wake_ms() == T0 + 3_000
    await claim_one(store, "soon", now_ms=T0 + 3_000)
    assert await store.next_wake_ms() == T0 + 9_000
    await store.cancel_run("late", reason={}, now_ms=T0 + 4_000)
    assert await store.next_wake_ms() is None


async def test_count_runnable_counts_pending_running_and_due_waiting_runs(
        store: Store) -> None:
    assert await store.count_runnable(now_ms=T0) == 0
    await store.create_run(new_run("pending"), now_ms=T0, owner=None, lease_ms=LEASE_MS)
    await create_claimed(store, "running")
    for run_id, wake in (("due", T0 + 100), ("future", T0 + 5_000), ("signal", None)):
        claim = await create_claimed(store, run_id)
        await store.suspend_run(run_id, claim.fence, wake_at_ms=wake,
                                waiting_for="go" if wake is None else None, now_ms=T0)
    for run_id, status in (("done", RunStatus.COMPLETED), ("stuck", RunStatus.NEEDS_ATTENTION)):
        claim = await create_claimed(store, run_id)
        await store.finish_run(run_id, claim.fence, status=status, result=None, error=None,
                               now_ms=T0)
    assert await store.count_runnable(now_ms=T0 + 50) == 2
    assert await store.count_runnable(now_ms=T0 + 100) == 3
    assert await store.count_runnable(now_ms=T0 + 5_000) == 4


async def test_a_run_taken_over_belongs_to_its_new_owner(store: Store) -> None:
    await create_claimed(store, "r1", owner=OWNER_A)
    claim = await take_over(store, "r1", owner=OWNER_B)
    run = await store.get_run("r1")
    assert run is not None
    assert (run.owner, run.status, claim.fence) == (OWNER_B, RunStatus.RUNNING, 2)
