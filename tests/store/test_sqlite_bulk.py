"""The SQLite writer's bulk statements: many operations of a batch applied together, and the
careful one-at-a-time path when one of them cannot be applied."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tether.errors import LeaseLost
from tether.store import Commit, SQLiteStore
from tether.types import RunStatus

from .helpers import LEASE_MS, OWNER_A, T0, create_claimed, new_run, record, take_over, write

pytestmark = pytest.mark.anyio
T = TypeVar("T")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "tether.db", flush_interval_ms=60_000)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.aclose()


async def in_one_batch(store: SQLiteStore, *writes: Awaitable[T]) -> list[T | BaseException]:
    """Run ``writes`` so that the writer applies them all in one transaction: the writer is
    held inside a first operation until every write is queued."""
    hold, held = threading.Event(), threading.Event()

    def block(conn: sqlite3.Connection) -> None:
        held.set()
        hold.wait(10)

    writer = store._writer
    assert writer is not None
    writer.submit(block, Commit.SOON)
    await asyncio.to_thread(held.wait, 10)
    before = store.batches
    tasks = [asyncio.ensure_future(w) for w in writes]
    await asyncio.sleep(0)  # every task runs to its submit
    hold.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert store.batches == before + 2, "the paused batch, then one for all the writes"
    return results


async def test_many_runs_created_in_one_batch_are_all_created_and_claimed(
        store: SQLiteStore) -> None:
    results = await in_one_batch(store, *(
        store.create_run(new_run(f"r{i}"), now_ms=T0, owner=OWNER_A, lease_ms=LEASE_MS)
        for i in range(20)))
    assert all(not isinstance(r, BaseException) and r.claim is not None for r in results)
    runs = await store.list_runs(limit=100)
    assert sorted(r.run_id for r in runs) == sorted(f"r{i}" for i in range(20))
    assert {r.status for r in runs} == {RunStatus.RUNNING}


async def test_an_existing_id_among_new_runs_returns_the_existing_run_and_creates_the_rest(
        store: SQLiteStore) -> None:
    await store.create_run(new_run("old", input_json='{"name": "Grace"}'), now_ms=T0,
                           owner=None, lease_ms=LEASE_MS)
    results = await in_one_batch(
        store,
        store.create_run(new_run("a"), now_ms=T0, owner=OWNER_A, lease_ms=LEASE_MS),
        store.create_run(new_run("old"), now_ms=T0, owner=OWNER_A, lease_ms=LEASE_MS),
        store.create_run(new_run("b"), now_ms=T0, owner=OWNER_A, lease_ms=LEASE_MS))
    a, old, b = results
    assert not isinstance(a, BaseException)
    assert a.claim is not None
    assert not isinstance(b, BaseException)
    assert b.claim is not None
    assert not isinstance(old, BaseException)
    assert old.claim is None
    assert old.run.input == {"name": "Grace"}  # the stored run, not the one asked for
    assert old.run.status is RunStatus.PENDING


async def test_a_stale_finish_among_many_fails_alone(store: SQLiteStore) -> None:
    claims = [await create_claimed(store, f"r{i}") for i in range(5)]
    await take_over(store, "r2")
    results = await in_one_batch(store, *(
        store.finish_run(c.run.run_id, c.fence, status=RunStatus.COMPLETED,
                         result=json.dumps(i), error=None, now_ms=T0 + 1)
        for i, c in enumerate(claims)))
    assert [isinstance(r, LeaseLost) for r in results] == [False, False, True, False, False]
    for i in (0, 1, 3, 4):
        run = await store.get_run(f"r{i}")
        assert run is not None
        assert (run.status, run.result) == (RunStatus.COMPLETED, i)
    run = await store.get_run("r2")
    assert run is not None
    assert run.status is RunStatus.RUNNING  # taken over, still the new owner's


async def test_children_finished_together_each_signal_their_parent(store: SQLiteStore) -> None:
    parent = await create_claimed(store, "parent")
    children = [await create_claimed(store, f"parent.{i}", parent_run_id="parent")
                for i in range(3)]
    plain = await create_claimed(store, "plain")
    assert await store.suspend_run("parent", parent.fence, wake_at_ms=None,
                                   waiting_for="tether.child:parent.1", now_ms=T0)
    await in_one_batch(store, *(
        store.finish_run(c.run.run_id, c.fence, status=RunStatus.COMPLETED,
                         result=json.dumps(c.run.run_id), error=None, now_ms=T0 + 1)
        for c in [*children, plain]))
    woken = await store.get_run("parent")
    assert woken is not None
    assert woken.status is RunStatus.PENDING  # the child it waited for woke it
    claim = (await store.claim_runs(owner=OWNER_A, now_ms=T0 + 2, lease_ms=LEASE_MS, limit=5,
                                    owner_is_dead=lambda owner: False, run_ids=["parent"]))[0]
    delivered: dict[str, Any] = {}
    for i in range(3):
        name = f"tether.child:parent.{i}"
        data = await store.take_signal("parent", claim.fence, name, record(10 + i))
        assert isinstance(data, str)
        delivered[name] = json.loads(data)
    assert {name: d["result"] for name, d in delivered.items()} == {
        f"tether.child:parent.{i}": f"parent.{i}" for i in range(3)}
    assert {d["status"] for d in delivered.values()} == {"completed"}


async def test_appends_of_many_runs_in_one_batch_keep_each_runs_records_in_order(
        store: SQLiteStore) -> None:
    claims = [await create_claimed(store, f"r{i}") for i in range(4)]
    await in_one_batch(store, *(
        write(store, c.run.run_id, c.fence,
              [record(1, "started"), record(1), record(2, value=f'"{c.run.run_id}"')])
        for c in claims))
    for c in claims:
        journal = await store.load_journal(c.run.run_id)
        assert [(r.seq, r.state) for r in journal] == [(1, "ok"), (2, "ok")]
        assert journal[1].value == f'"{c.run.run_id}"'
