"""Parking runs and waking them: suspend_run, signals, and child runs telling their parent."""

from __future__ import annotations

import json

import pytest

from tether.errors import LeaseLost, RunNotFound, StoreError, UsageError
from tether.store import (
    CHILD_SIGNAL_PREFIX,
    MISSING,
    Claim,
    Missing,
    Record,
    RecordState,
    Store,
)
from tether.types import Run, RunStatus

from .helpers import T0, claim_one, create_claimed, record, write

pytestmark = pytest.mark.anyio


def wait_record(seq: int, name: str) -> Record:
    return record(seq, RecordState.STARTED, kind="wait", name=name)


async def require(store: Store, run_id: str) -> Run:
    run = await store.get_run(run_id)
    assert run is not None
    return run


async def waiting_for(store: Store, run_id: str, name: str, *,
                      wake_at_ms: int | None = None) -> Claim:
    """A run parked until the signal ``name``; returns the claim it was parked under."""
    claim = await create_claimed(store, run_id)
    assert await store.suspend_run(run_id, claim.fence, wake_at_ms=wake_at_ms,
                                   waiting_for=name, now_ms=T0)
    return claim


# -- suspend_run ---------------------------------------------------------------------------


async def test_suspend_parks_the_run_until_its_timer(store: Store) -> None:
    claim = await create_claimed(store, "r1")
    assert await store.suspend_run("r1", claim.fence, wake_at_ms=T0 + 500, waiting_for=None,
                                   now_ms=T0 + 1)
    run = await require(store, "r1")
    assert (run.status, run.wake_at_ms, run.waiting_for, run.owner) == (
        RunStatus.WAITING, T0 + 500, None, None)
    assert run.updated_at_ms == T0 + 1
    assert await store.next_wake_ms() == T0 + 500
    # Parking gave up the claim: the old fence writes no more.
    with pytest.raises(LeaseLost):
        await write(store, "r1", claim.fence, [record(1)])


async def test_suspend_parks_the_run_until_a_signal(store: Store) -> None:
    await waiting_for(store, "r1", "approval", wake_at_ms=T0 + 60_000)
    run = await require(store, "r1")
    assert (run.status, run.waiting_for, run.wake_at_ms) == (
        RunStatus.WAITING, "approval", T0 + 60_000)
    # With a timeout as well, the run is woken when it passes, signal or not.
    await claim_one(store, "r1", now_ms=T0 + 60_000)


async def test_suspend_returns_false_and_keeps_running_when_the_signal_is_already_there(
        store: Store) -> None:
    claim = await create_claimed(store, "r1")
    await store.send_signal("r1", "approval", '"yes"', now_ms=T0)
    before = await require(store, "r1")
    assert not await store.suspend_run("r1", claim.fence, wake_at_ms=None,
                                       waiting_for="approval", now_ms=T0 + 1)
    assert await require(store, "r1") == before
    assert before.status is RunStatus.RUNNING
    # The claim is still good: the run goes on to take the signal.
    taken = await store.take_signal("r1", claim.fence, "approval", wait_record(1, "approval"))
    assert taken == '"yes"'


async def test_suspend_ignores_signals_of_other_names_and_consumed_ones(store: Store) -> None:
    claim = await create_claimed(store, "r1")
    await store.send_signal("r1", "approval", '"first"', now_ms=T0)
    await store.send_signal("r1", "other", None, now_ms=T0)
    assert await store.take_signal("r1", claim.fence, "approval",
                                   wait_record(1, "approval")) == '"first"'
    assert await store.suspend_run("r1", claim.fence, wake_at_ms=None, waiting_for="approval",
                                   now_ms=T0 + 1)
    assert (await require(store, "r1")).status is RunStatus.WAITING


# -- send_signal ---------------------------------------------------------------------------


async def test_a_signal_wakes_a_run_waiting_for_that_name(store: Store) -> None:
    await waiting_for(store, "r1", "approval", wake_at_ms=T0 + 60_000)
    run = await store.send_signal("r1", "approval", '{"by": "bob"}', now_ms=T0 + 5)
    assert (run.status, run.waiting_for, run.wake_at_ms, run.updated_at_ms) == (
        RunStatus.PENDING, None, None, T0 + 5)
    assert await require(store, "r1") == run
    assert await store.next_wake_ms() is None
    claim = await claim_one(store, "r1", now_ms=T0 + 6)
    taken = await store.take_signal("r1", claim.fence, "approval", wait_record(1, "approval"))
    assert taken == '{"by": "bob"}'


async def test_a_signal_of_another_name_is_kept_but_does_not_wake_the_run(store: Store) -> None:
    await waiting_for(store, "r1", "approval")
    run = await store.send_signal("r1", "comment", '"looks good"', now_ms=T0 + 5)
    assert (run.status, run.waiting_for) == (RunStatus.WAITING, "approval")
    await store.send_signal("r1", "approval", None, now_ms=T0 + 6)
    claim = await claim_one(store, "r1", now_ms=T0 + 7)
    assert await store.take_signal("r1", claim.fence, "comment",
                                   wait_record(1, "comment")) == '"looks good"'


async def test_a_signal_reaches_a_running_run_without_changing_it(store: Store) -> None:
    await create_claimed(store, "r1")
    before = await require(store, "r1")
    run = await store.send_signal("r1", "approval", None, now_ms=T0 + 5)
    assert (run.status, run.owner) == (before.status, before.owner)


@pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED])
async def test_signals_to_an_ended_run_are_refused(store: Store, status: RunStatus) -> None:
    claim = await create_claimed(store, "r1")
    if status is RunStatus.CANCELLED:
        await store.cancel_run("r1", reason={"message": "stop"}, now_ms=T0 + 1)
    else:
        await store.finish_run("r1", claim.fence, status=status, result=None, error=None,
                               now_ms=T0 + 1)
    before = await require(store, "r1")
    with pytest.raises(UsageError, match=str(status)):
        await store.send_signal("r1", "approval", None, now_ms=T0 + 2)
    assert await require(store, "r1") == before


async def test_a_signal_to_an_unknown_run_raises_run_not_found(store: Store) -> None:
    with pytest.raises(RunNotFound):
        await store.send_signal("nope", "approval", None, now_ms=T0)


# -- take_signal ---------------------------------------------------------------------------


async def test_take_signal_consumes_the_oldest_signal_of_that_name_exactly_once(
        store: Store) -> None:
    claim = await create_claimed(store, "r1")
    for name, data in (("a", '"a1"'), ("b", '"b1"'), ("a", '"a2"'), ("a", None)):
        await store.send_signal("r1", name, data, now_ms=T0)
    taken = [await store.take_signal("r1", claim.fence, name, wait_record(seq, name))
             for seq, name in enumerate(("a", "a", "b", "a", "a", "b"), start=1)]
    assert taken == ['"a1"', '"a2"', '"b1"', "null", MISSING, MISSING]


async def test_take_signal_stores_its_record_final_with_the_signals_data(store: Store) -> None:
    claim = await create_claimed(store, "r1")
    await store.send_signal("r1", "approval", '{"approved": true}', now_ms=T0)
    intent = wait_record(1, "approval")
    await store.take_signal("r1", claim.fence, "approval", intent)
    (stored,) = await store.load_journal("r1")
    assert (stored.seq, stored.kind, stored.name, stored.digest) == (
        1, "wait", "approval", intent.digest)
    assert (stored.state, stored.value) == (RecordState.OK, '{"approved": true}')


async def test_a_taken_signal_is_not_taken_again_after_a_new_claim(store: Store) -> None:
    first = await create_claimed(store, "r1", lease_ms=1_000)
    await store.send_signal("r1", "go", '"once"', now_ms=T0)
    assert await store.take_signal("r1", first.fence, "go", wait_record(1, "go")) == '"once"'
    second = await claim_one(store, "r1", now_ms=T0 + 5_000)
    assert await store.take_signal("r1", second.fence, "go", wait_record(2, "go")) is MISSING


async def test_take_signal_finding_nothing_writes_nothing(store: Store) -> None:
    claim = await create_claimed(store, "r1")
    await store.send_signal("r1", "other", None, now_ms=T0)
    assert await store.take_signal("r1", claim.fence, "go", wait_record(1, "go")) is MISSING
    assert await store.load_journal("r1") == []


async def test_take_signal_that_cannot_store_its_record_consumes_nothing(store: Store) -> None:
    """The signal and its journal record are one transaction: both or neither."""
    claim = await create_claimed(store, "r1")
    await write(store, "r1", claim.fence, [record(1, value='"final"')])
    await store.send_signal("r1", "go", '"data"', now_ms=T0)
    with pytest.raises(StoreError):
        await store.take_signal("r1", claim.fence, "go", wait_record(1, "go"))
    assert [r.value for r in await store.load_journal("r1")] == ['"final"']
    # Once the failed write is forgotten, the same claim still finds the signal.
    store.forget_claim("r1", claim.fence)
    assert await store.take_signal("r1", claim.fence, "go", wait_record(2, "go")) == '"data"'


# -- child runs ----------------------------------------------------------------------------


def child_signal_data(data: str | Missing) -> dict[str, object]:
    """The decoded data of a ``tether.child:<id>`` signal."""
    assert isinstance(data, str)
    decoded = json.loads(data)
    assert isinstance(decoded, dict)
    return decoded


@pytest.mark.parametrize(("status", "result", "error"), [
    (RunStatus.COMPLETED, '{"total": 3}', None),
    (RunStatus.FAILED, None, '{"code": "tool.failed", "message": "boom"}'),
])
async def test_a_finished_child_wakes_its_waiting_parent_with_its_outcome(
        store: Store, status: RunStatus, result: str | None, error: str | None) -> None:
    signal = CHILD_SIGNAL_PREFIX + "child"
    await waiting_for(store, "parent", signal)
    child = await create_claimed(store, "child", parent_run_id="parent")
    await store.finish_run("child", child.fence, status=status, result=result, error=error,
                           now_ms=T0 + 10)
    parent = await require(store, "parent")
    assert (parent.status, parent.waiting_for) == (RunStatus.PENDING, None)
    claim = await claim_one(store, "parent", now_ms=T0 + 11)
    data = await store.take_signal("parent", claim.fence, signal, wait_record(1, signal))
    assert child_signal_data(data) == {
        "status": str(status),
        "result": None if result is None else json.loads(result),
        "error": None if error is None else json.loads(error)}


async def test_a_finished_child_leaves_its_signal_for_a_parent_not_yet_waiting(
        store: Store) -> None:
    signal = CHILD_SIGNAL_PREFIX + "child"
    parent = await create_claimed(store, "parent")
    child = await create_claimed(store, "child", parent_run_id="parent")
    await store.finish_run("child", child.fence, status=RunStatus.COMPLETED, result='"ok"',
                           error=None, now_ms=T0 + 10)
    assert (await require(store, "parent")).status is RunStatus.RUNNING
    assert not await store.suspend_run("parent", parent.fence, wake_at_ms=None,
                                       waiting_for=signal, now_ms=T0 + 11)
    data = await store.take_signal("parent", parent.fence, signal, wait_record(1, signal))
    assert child_signal_data(data)["result"] == "ok"


async def test_a_cancelled_child_tells_its_waiting_parent(store: Store) -> None:
    signal = CHILD_SIGNAL_PREFIX + "child"
    await waiting_for(store, "parent", signal)
    await create_claimed(store, "child", parent_run_id="parent")
    await store.cancel_run("child", reason={"message": "operator said stop"}, now_ms=T0 + 10)
    assert (await require(store, "parent")).status is RunStatus.PENDING
    claim = await claim_one(store, "parent", now_ms=T0 + 11)
    data = await store.take_signal("parent", claim.fence, signal, wait_record(1, signal))
    assert child_signal_data(data) == {"status": "cancelled", "result": None,
                                       "error": {"message": "operator said stop"}}


async def test_a_child_that_needs_attention_has_not_ended_and_sends_nothing(
        store: Store) -> None:
    signal = CHILD_SIGNAL_PREFIX + "child"
    await waiting_for(store, "parent", signal)
    child = await create_claimed(store, "child", parent_run_id="parent")
    await store.finish_run("child", child.fence, status=RunStatus.NEEDS_ATTENTION, result=None,
                           error='{"message": "uncertain"}', now_ms=T0 + 10)
    parent = await require(store, "parent")
    assert (parent.status, parent.waiting_for) == (RunStatus.WAITING, signal)


async def test_a_child_signal_goes_only_to_its_own_parent(store: Store) -> None:
    signal = CHILD_SIGNAL_PREFIX + "child"
    await waiting_for(store, "parent", signal)
    await waiting_for(store, "bystander", signal)
    child = await create_claimed(store, "child", parent_run_id="parent")
    await store.finish_run("child", child.fence, status=RunStatus.COMPLETED, result="1",
                           error=None, now_ms=T0 + 10)
    assert (await require(store, "bystander")).status is RunStatus.WAITING
