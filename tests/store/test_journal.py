"""Journals: fencing, forward-only records, commit order, threads and operator resolution."""

from __future__ import annotations

import json

import pytest

from tether.errors import LeaseLost, RunNotFound, StoreError, UsageError
from tether.store import Commit, Record, RecordState, Store
from tether.types import RunStatus

from .helpers import (
    OWNER_A,
    OWNER_B,
    T0,
    claim_one,
    create_claimed,
    new_run,
    record,
    take_over,
    write,
)

pytestmark = pytest.mark.anyio


# -- fencing -------------------------------------------------------------------------------


async def test_append_with_a_stale_fence_raises_lease_lost_and_writes_nothing(
        store: Store) -> None:
    old = await create_claimed(store, "r1", owner=OWNER_A)
    new = await take_over(store, "r1", owner=OWNER_B)
    with pytest.raises(LeaseLost):
        await write(store, "r1", old.fence, [record(1)])
    assert await store.load_journal("r1") == []
    await write(store, "r1", new.fence, [record(1, value='"new"')])
    assert [r.value for r in await store.load_journal("r1")] == ['"new"']


async def test_finish_with_a_stale_fence_raises_lease_lost_and_changes_nothing(
        store: Store) -> None:
    old = await create_claimed(store, "r1", owner=OWNER_A)
    await take_over(store, "r1", owner=OWNER_B)
    before = await store.get_run("r1")
    with pytest.raises(LeaseLost):
        await store.finish_run("r1", old.fence, status=RunStatus.COMPLETED, result='"x"',
                               error=None, now_ms=T0 + 1)
    assert await store.get_run("r1") == before


async def test_suspend_with_a_stale_fence_raises_lease_lost_and_changes_nothing(
        store: Store) -> None:
    old = await create_claimed(store, "r1", owner=OWNER_A)
    await take_over(store, "r1", owner=OWNER_B)
    before = await store.get_run("r1")
    with pytest.raises(LeaseLost):
        await store.suspend_run("r1", old.fence, wake_at_ms=T0 + 5, waiting_for=None,
                                now_ms=T0 + 1)
    assert await store.get_run("r1") == before
    assert await store.next_wake_ms() is None


async def test_take_signal_with_a_stale_fence_raises_lease_lost_and_consumes_nothing(
        store: Store) -> None:
    old = await create_claimed(store, "r1", owner=OWNER_A)
    await store.send_signal("r1", "approval", '{"ok": true}', now_ms=T0)
    new = await take_over(store, "r1", owner=OWNER_B)
    with pytest.raises(LeaseLost):
        await store.take_signal("r1", old.fence, "approval",
                                record(1, RecordState.STARTED, kind="wait", name="approval"))
    assert await store.load_journal("r1") == []
    taken = await store.take_signal("r1", new.fence, "approval",
                                    record(1, RecordState.STARTED, kind="wait", name="approval"))
    assert taken == '{"ok": true}'


async def test_after_cancel_the_old_owners_writes_are_refused(store: Store) -> None:
    claim = await create_claimed(store, "r1")
    await write(store, "r1", claim.fence, [record(1)])
    await store.send_signal("r1", "go", None, now_ms=T0)
    await store.cancel_run("r1", reason={"message": "stop"}, now_ms=T0 + 1)
    with pytest.raises(LeaseLost):
        await write(store, "r1", claim.fence, [record(2)])
    with pytest.raises(LeaseLost):
        await store.take_signal("r1", claim.fence, "go", record(2, RecordState.STARTED))
    with pytest.raises(LeaseLost):
        await store.suspend_run("r1", claim.fence, wake_at_ms=T0 + 9, waiting_for=None,
                                now_ms=T0 + 2)
    with pytest.raises(LeaseLost):
        await store.finish_run("r1", claim.fence, status=RunStatus.COMPLETED, result='"x"',
                               error=None, now_ms=T0 + 2)
    run = await store.get_run("r1")
    assert run is not None
    assert (run.status, run.result) == (RunStatus.CANCELLED, None)
    assert [r.seq for r in await store.load_journal("r1")] == [1]


async def test_a_settled_runs_own_fence_can_write_no_more(store: Store) -> None:
    claim = await create_claimed(store, "r1")
    await store.finish_run("r1", claim.fence, status=RunStatus.COMPLETED, result="1",
                           error=None, now_ms=T0 + 1)
    with pytest.raises(LeaseLost):
        await write(store, "r1", claim.fence, [record(1)])
    with pytest.raises(LeaseLost):
        await store.finish_run("r1", claim.fence, status=RunStatus.FAILED, result=None,
                               error='{"message": "again"}', now_ms=T0 + 2)
    run = await store.get_run("r1")
    assert run is not None
    assert (run.status, run.result, run.error) == (RunStatus.COMPLETED, 1, None)


async def test_writes_for_an_unknown_run_raise_lease_lost(store: Store) -> None:
    with pytest.raises(LeaseLost):
        await write(store, "nope", 1, [record(1)])
    with pytest.raises(LeaseLost):
        await store.finish_run("nope", 1, status=RunStatus.COMPLETED, result=None, error=None,
                               now_ms=T0)


# -- records move forward only -------------------------------------------------------------


@pytest.mark.parametrize("final", [RecordState.OK, RecordState.ERROR])
async def test_an_intent_can_be_settled_ok_or_error(store: Store, final: str) -> None:
    claim = await create_claimed(store, "r1")
    intent = record(1, RecordState.STARTED, attempts=1)
    await write(store, "r1", claim.fence, [intent])
    assert await store.load_journal("r1") == [intent]
    retried = record(1, RecordState.STARTED, attempts=2, detail='{"note": "retry"}')
    await write(store, "r1", claim.fence, [retried])
    assert await store.load_journal("r1") == [retried]
    outcome = record(1, final, value='{"answer": 42}', attempts=2)
    await write(store, "r1", claim.fence, [outcome])
    assert await store.load_journal("r1") == [outcome]


@pytest.mark.parametrize(("first", "second"), [
    (RecordState.OK, RecordState.OK),
    (RecordState.OK, RecordState.ERROR),
    (RecordState.OK, RecordState.STARTED),
    (RecordState.ERROR, RecordState.OK),
    (RecordState.ERROR, RecordState.STARTED),
])
async def test_a_final_record_cannot_change(store: Store, first: str, second: str) -> None:
    claim = await create_claimed(store, "r1")
    original = record(1, first, value='"first"')
    await write(store, "r1", claim.fence, [original])
    with pytest.raises(StoreError) as raised:
        await write(store, "r1", claim.fence, [record(1, second, value='"second"')])
    assert not isinstance(raised.value, LeaseLost)
    assert await store.load_journal("r1") == [original]


async def test_an_append_that_changes_a_final_record_keeps_none_of_its_records(
        store: Store) -> None:
    claim = await create_claimed(store, "r1")
    original = record(1)
    await write(store, "r1", claim.fence, [original])
    with pytest.raises(StoreError):
        await write(store, "r1", claim.fence, [record(2), record(1, value='"changed"'),
                                               record(3)])
    assert await store.load_journal("r1") == [original]


async def test_one_append_may_carry_an_intent_and_its_outcome(store: Store) -> None:
    claim = await create_claimed(store, "r1")
    outcome = record(1, RecordState.OK, value='"done"')
    await write(store, "r1", claim.fence, [record(1, RecordState.STARTED), outcome])
    assert await store.load_journal("r1") == [outcome]


async def test_a_record_cannot_move_back_within_one_append(store: Store) -> None:
    claim = await create_claimed(store, "r1")
    with pytest.raises(StoreError):
        await write(store, "r1", claim.fence, [record(1, RecordState.OK),
                                               record(1, RecordState.STARTED)])
    assert await store.load_journal("r1") == []


# -- order and commit modes ----------------------------------------------------------------


async def test_lazy_records_are_committed_by_a_later_durable_append_of_the_same_run(
        store: Store) -> None:
    claim = await create_claimed(store, "r1")
    await write(store, "r1", claim.fence, [record(1)], Commit.LAZY)
    await write(store, "r1", claim.fence, [record(2), record(3, RecordState.STARTED)],
                Commit.LAZY)
    await write(store, "r1", claim.fence, [record(4)], Commit.SOON)
    await write(store, "r1", claim.fence, [record(5, RecordState.STARTED)], Commit.WAIT)
    journal = await store.load_journal("r1")
    assert [(r.seq, r.state) for r in journal] == [
        (1, "ok"), (2, "ok"), (3, "started"), (4, "ok"), (5, "started")]


async def test_lazy_records_are_committed_by_a_later_durable_append_of_another_run(
        store: Store) -> None:
    lazy = await create_claimed(store, "lazy")
    durable = await create_claimed(store, "durable")
    await write(store, "lazy", lazy.fence, [record(1), record(2)], Commit.LAZY)
    await write(store, "durable", durable.fence, [record(1)], Commit.WAIT)
    assert [r.seq for r in await store.load_journal("lazy")] == [1, 2]
    assert [r.seq for r in await store.load_journal("durable")] == [1]


async def test_load_journal_returns_records_by_seq_whatever_the_append_order(
        store: Store) -> None:
    claim = await create_claimed(store, "r1")
    await write(store, "r1", claim.fence, [record(3)], Commit.LAZY)
    await write(store, "r1", claim.fence, [record(1), record(5)], Commit.LAZY)
    await write(store, "r1", claim.fence, [record(2)], Commit.WAIT)
    assert [r.seq for r in await store.load_journal("r1")] == [1, 2, 3, 5]


async def test_load_journal_keeps_every_field_of_a_record(store: Store) -> None:
    claim = await create_claimed(store, "r1")
    full = Record(seq=7, kind="llm", name="scripted", digest="abc123", state=RecordState.ERROR,
                  value='{"code": "model.failed", "message": "\\u00e9 boom"}', attempts=3,
                  started_at_ms=T0 + 10, finished_at_ms=T0 + 20,
                  detail='{"usage": {"input_tokens": 5}}')
    await write(store, "r1", claim.fence, [full])
    loaded = await store.load_journal("r1")
    assert loaded == [full]
    assert loaded[0].to_json()["detail"] == {"usage": {"input_tokens": 5}}


async def test_load_journal_of_an_unknown_run_is_empty(store: Store) -> None:
    assert await store.load_journal("nope") == []


async def test_journals_of_different_runs_are_kept_apart(store: Store) -> None:
    a = await create_claimed(store, "a")
    b = await create_claimed(store, "b")
    await write(store, "a", a.fence, [record(1, value='"from a"')], Commit.LAZY)
    await write(store, "b", b.fence, [record(1, value='"from b"')], Commit.WAIT)
    assert [r.value for r in await store.load_journal("a")] == ['"from a"']
    assert [r.value for r in await store.load_journal("b")] == ['"from b"']


# -- threads -------------------------------------------------------------------------------


def thread_record(seq: int, *messages: str, state: str = RecordState.OK) -> Record:
    value = json.dumps([{"role": "user", "content": m} for m in messages])
    return record(seq, state, kind="thread", name="th",
                  value=value if state != RecordState.STARTED else None)


async def test_load_thread_returns_thread_records_of_completed_runs_in_completion_order(
        store: Store) -> None:
    plan = [("first", "th", RunStatus.COMPLETED, T0 + 30),
            ("second", "th", RunStatus.COMPLETED, T0 + 10),
            ("failed", "th", RunStatus.FAILED, T0 + 5),
            ("elsewhere", "other", RunStatus.COMPLETED, T0 + 1)]
    for run_id, thread, status, finished in plan:
        claim = await create_claimed(store, run_id, thread_id=thread)
        await write(store, run_id, claim.fence, [
            record(1, kind="llm", value='{"text": "not a thread message"}'),
            thread_record(2, f"{run_id} a", f"{run_id} b"),
            thread_record(3, f"{run_id} c"),
        ])
        await store.finish_run(run_id, claim.fence, status=status, result=None, error=None,
                               now_ms=finished)
    open_run = await create_claimed(store, "running", thread_id="th")
    await write(store, "running", open_run.fence, [thread_record(1, "running a")])

    messages = await store.load_thread("th")
    assert [m["content"] for m in messages] == [
        "second a", "second b", "second c", "first a", "first b", "first c"]
    assert messages[0] == {"role": "user", "content": "second a"}
    assert [m["content"] for m in await store.load_thread("other")] == [
        "elsewhere a", "elsewhere b", "elsewhere c"]
    assert await store.load_thread("unknown") == []


# -- resolve_run ---------------------------------------------------------------------------


async def needs_attention(store: Store, run_id: str = "r1") -> None:
    """A run that stopped between a side effect's intent (seq 2) and its outcome."""
    claim = await create_claimed(store, run_id)
    await write(store, run_id, claim.fence, [
        record(1, kind="llm", value='{"text": "charge the card"}'),
        record(2, RecordState.STARTED, kind="tool", name="charge"),
    ])
    await store.finish_run(run_id, claim.fence, status=RunStatus.NEEDS_ATTENTION, result=None,
                           error='{"code": "tool.uncertain", "message": "charge"}',
                           now_ms=T0 + 5)


async def test_resolve_retry_makes_the_run_pending_and_keeps_the_intent(store: Store) -> None:
    await needs_attention(store)
    run = await store.resolve_run("r1", action="retry", value=None, now_ms=T0 + 10)
    assert (run.status, run.error) == (RunStatus.PENDING, None)
    assert await store.get_run("r1") == run
    journal = await store.load_journal("r1")
    assert journal[1].state == RecordState.STARTED
    assert json.loads(journal[1].detail or "{}")["resolution"] == "retry"
    claim = await claim_one(store, "r1", now_ms=T0 + 11)
    assert claim.run.status is RunStatus.RUNNING


async def test_resolve_skip_records_the_given_value_as_the_uncertain_tools_result(
        store: Store) -> None:
    await needs_attention(store)
    run = await store.resolve_run("r1", action="skip", value='{"charged": true}', now_ms=T0 + 10)
    assert run.status is RunStatus.PENDING
    llm, tool = await store.load_journal("r1")
    assert llm.state == RecordState.OK
    assert (tool.seq, tool.state, tool.value) == (2, RecordState.OK, '{"charged": true}')
    assert tool.finished_at_ms == T0 + 10
    assert json.loads(tool.detail or "{}")["resolution"] == "skip"


async def test_resolve_skip_without_a_value_records_null(store: Store) -> None:
    await needs_attention(store)
    await store.resolve_run("r1", action="skip", value=None, now_ms=T0 + 10)
    tool = (await store.load_journal("r1"))[1]
    assert (tool.state, tool.value) == (RecordState.OK, "null")


async def test_resolve_fail_fails_the_run_and_says_an_operator_did_it(store: Store) -> None:
    await needs_attention(store)
    before = await store.load_journal("r1")
    run = await store.resolve_run("r1", action="fail", value=None, now_ms=T0 + 10)
    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert run.error["code"] == "tool.uncertain"
    assert "operator" in run.error["resolution"]
    assert await store.load_journal("r1") == before
    assert await store.count_runnable(now_ms=T0 + 10) == 0


@pytest.mark.parametrize("status", [RunStatus.RUNNING, RunStatus.COMPLETED, RunStatus.PENDING])
async def test_resolve_refuses_runs_that_do_not_need_attention(store: Store,
                                                               status: RunStatus) -> None:
    if status is RunStatus.PENDING:
        await store.create_run(new_run("r1"), now_ms=T0, owner=None, lease_ms=1)
    else:
        claim = await create_claimed(store, "r1")
        if status is RunStatus.COMPLETED:
            await store.finish_run("r1", claim.fence, status=status, result="1", error=None,
                                   now_ms=T0 + 1)
    before = await store.get_run("r1")
    for action in ("retry", "skip", "fail"):
        with pytest.raises(UsageError, match="needs_attention"):
            await store.resolve_run("r1", action=action, value=None, now_ms=T0 + 2)
    assert await store.get_run("r1") == before


async def test_resolve_skip_refuses_a_run_without_an_uncertain_tool_record(
        store: Store) -> None:
    claim = await create_claimed(store, "r1")
    await write(store, "r1", claim.fence, [
        record(1, kind="tool"),
        record(2, RecordState.STARTED, kind="sleep", name="sleep"),
    ])
    await store.finish_run("r1", claim.fence, status=RunStatus.NEEDS_ATTENTION, result=None,
                           error=None, now_ms=T0 + 1)
    with pytest.raises(UsageError, match="skip"):
        await store.resolve_run("r1", action="skip", value='"x"', now_ms=T0 + 2)
    run = await store.get_run("r1")
    assert run is not None
    assert run.status is RunStatus.NEEDS_ATTENTION
    # Retrying the whole run is still possible.
    retried = await store.resolve_run("r1", action="retry", value=None, now_ms=T0 + 3)
    assert retried.status is RunStatus.PENDING


async def test_resolve_refuses_an_unknown_action_and_an_unknown_run(store: Store) -> None:
    await needs_attention(store)
    with pytest.raises(UsageError, match="retry"):
        await store.resolve_run("r1", action="ignore", value=None, now_ms=T0 + 10)
    with pytest.raises(RunNotFound):
        await store.resolve_run("nope", action="retry", value=None, now_ms=T0 + 10)

